fn main() {
    println!("sd-wgpu");
}
