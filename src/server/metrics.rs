//! What `/metrics` reports, in the Prometheus/OpenMetrics text format
//! (prometheus-client). Counters and histograms are updated as jobs run; the gauges
//! (jobs by state, queue depth, memory) are read when scraped.

use crate::Device;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label set `[("state", "done")]`.
type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    /// Jobs now in each state (`queued`, `running`, kept `done`/`failed`/`cancelled`).
    jobs: Family<Labels, Gauge>,
    /// Jobs that ended, by final state, since the start.
    finished: Family<Labels, Counter>,
    /// Requests refused with 429 because the queue was full.
    rejected: Counter,
    queue_depth: Gauge,
    queue_capacity: Gauge,
    /// One model call (UNet, guidance, sampler update), seconds.
    step_seconds: Histogram,
    /// Submission to end, queueing included, seconds.
    job_seconds: Histogram,
    rss_bytes: Gauge,
    gpu_bytes: Gauge,
    gpu_peak_bytes: Gauge,
    /// Sum and count of job durations, for the mean (the histogram does not expose them).
    job_totals: std::sync::Mutex<(f64, u64)>,
    /// Where memory figures come from: GPU allocations when the backend reports them.
    device: Device,
}

impl Metrics {
    pub fn new(device: Device) -> Metrics {
        let mut registry = Registry::with_prefix("sd_wgpu");
        let jobs = Family::<Labels, Gauge>::default();
        let finished = Family::<Labels, Counter>::default();
        let rejected = Counter::default();
        let queue_depth = Gauge::default();
        let queue_capacity = Gauge::default();
        // 10 ms (the demo model's steps) to about 5 min (SD 1.5 at 1024 px on a CPU).
        let step_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        let job_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        let (rss_bytes, gpu_bytes, gpu_peak_bytes) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("jobs", "Jobs now in each state", jobs.clone());
        registry.register(
            "jobs_finished",
            "Jobs that ended, by final state",
            finished.clone(),
        );
        registry.register(
            "jobs_rejected",
            "Jobs refused because the queue was full (429)",
            rejected.clone(),
        );
        registry.register("queue_depth", "Jobs waiting in the queue", queue_depth.clone());
        registry.register("queue_capacity", "Queue size (--queue)", queue_capacity.clone());
        registry.register(
            "step_duration_seconds",
            "Duration of one model call",
            step_seconds.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Duration of a job from submission to its end",
            job_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process (VmRSS)",
            rss_bytes.clone(),
        );
        if device.is_gpu() {
            registry.register(
                "gpu_memory_bytes",
                "GPU memory in use by sd-wgpu's buffers",
                gpu_bytes.clone(),
            );
            registry.register(
                "gpu_memory_peak_bytes",
                "Peak GPU memory in use by sd-wgpu's buffers",
                gpu_peak_bytes.clone(),
            );
        }
        Metrics {
            registry,
            jobs,
            finished,
            rejected,
            queue_depth,
            queue_capacity,
            step_seconds,
            job_seconds,
            rss_bytes,
            gpu_bytes,
            gpu_peak_bytes,
            job_totals: std::sync::Mutex::new((0.0, 0)),
            device,
        }
    }

    pub fn step(&self, seconds: f64) {
        self.step_seconds.observe(seconds);
    }

    pub fn job_finished(&self, state: &str, seconds: f64) {
        self.finished.get_or_create(&label(state)).inc();
        self.job_seconds.observe(seconds);
        let mut totals = self.job_totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.0 += seconds;
        totals.1 += 1;
    }

    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// Mean job duration so far (seconds), for `Retry-After`.
    pub fn mean_job_seconds(&self) -> Option<f64> {
        let (sum, n) = *self.job_totals.lock().unwrap_or_else(|p| p.into_inner());
        (n > 0).then(|| sum / n as f64)
    }

    /// The text for `/metrics`, the gauges read now: `counts` are the jobs by state.
    pub fn render(&self, counts: &[(&str, usize)], queue_depth: usize, queue_capacity: usize) -> String {
        for (state, n) in counts {
            self.jobs.get_or_create(&label(state)).set(*n as i64);
        }
        self.queue_depth.set(queue_depth as i64);
        self.queue_capacity.set(queue_capacity as i64);
        self.rss_bytes.set(resident_bytes().unwrap_or(0) as i64);
        if let Some(gpu) = self.device.gpu() {
            let stats = gpu.memory_stats();
            self.gpu_bytes.set(stats.in_use as i64);
            self.gpu_peak_bytes.set(stats.peak_in_use as i64);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn label(state: &str) -> Labels {
    vec![("state".to_string(), state.to_string())]
}

/// This process's resident memory from /proc (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
