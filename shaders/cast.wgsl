// dtype conversion between f32 and f16 (compiled with T = f16).
// CPU twin: src/cpu/elementwise.rs `cast`.

struct Params {
    n: u32,
    x_off: u32,
    o_off: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if TO_F16
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f16>;
#else
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
#endif

@compute @workgroup_size(WG)
fn convert(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
#if TO_F16
    o[p.o_off + i] = f16(x[p.x_off + i]);
#else
    o[p.o_off + i] = f32(x[p.x_off + i]);
#endif
}
