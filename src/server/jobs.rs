//! The job queue and registry: every generation, whichever API asked for it, is a job.
//!
//! - Submitting puts a job at the back of a bounded FIFO queue ([`Jobs::submit`]: 429 with
//!   `Retry-After` when `--queue` jobs already wait, 503 once shutting down).
//! - The worker thread (worker.rs) takes jobs from the front, one at a time, and reports
//!   steps, images and the end here; each report updates the job's snapshot and is
//!   broadcast to its subscribers (the SSE stream).
//! - A job ends done, failed or cancelled ([`Jobs::cancel`]: a queued job at once, the
//!   running one at its next step). Ended jobs, with their PNGs, are kept for the retention
//!   time (`--retention`), then dropped by [`Jobs::sweep`].
//! - Synchronous APIs wait through a [`WaitGuard`]: when the handler's future is dropped
//!   (hyper drops it when the client closes the connection) the job is cancelled.
//!
//! Lock order: only the registry's mutex; nothing blocks while holding it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, watch};

use super::error::ApiError;
use super::metrics::Metrics;

pub use super::job::{JobEvent, JobId, JobImage, JobSnapshot, JobSpec, JobState, StepUpdate};

/// Events buffered per subscriber; a slower reader skips steps, never the end.
const EVENT_BUFFER: usize = 64;

/// Ended jobs kept at most, whatever the retention: the oldest go first. With SD 1.5's
/// 512x512 PNGs (~400 KB) this bounds kept images to a few hundred MB.
pub const MAX_ENDED_JOBS: usize = 1024;

/// What the worker takes from the queue.
pub struct Taken {
    pub id: JobId,
    pub spec: JobSpec,
    pub cancel: Arc<AtomicBool>,
}

struct Entry {
    snap: JobSnapshot,
    /// Taken by the worker when the job starts.
    spec: Option<JobSpec>,
    cancel: Arc<AtomicBool>,
    events: broadcast::Sender<JobEvent>,
    done: watch::Sender<bool>,
    submitted: Instant,
    ended: Option<Instant>,
}

struct Registry {
    jobs: HashMap<JobId, Entry>,
    queue: VecDeque<JobId>,
    running: Option<JobId>,
    /// Ended jobs, oldest first (for the retention sweep and [`MAX_ENDED_JOBS`]).
    ended: VecDeque<JobId>,
    closed: bool,
}

struct Shared {
    registry: Mutex<Registry>,
    /// Signalled when a job is queued or the queue closes (the worker waits on it).
    wake: Condvar,
    capacity: usize,
    retention: Duration,
    metrics: Arc<Metrics>,
    /// Cluster gateways (cluster/gateway.rs): the jobs live in NATS and this registry
    /// mirrors them; cancelling asks NATS, through this hook.
    remote: Option<RemoteCancel>,
}

/// Asks the cluster to cancel a job (a gateway's [`Jobs::mirror_of`]).
pub type RemoteCancel = Box<dyn Fn(&str) + Send + Sync>;

/// The queue and registry; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Jobs(Arc<Shared>);

impl Jobs {
    /// A queue of `capacity` waiting jobs whose ended jobs are kept for `retention`.
    pub fn new(capacity: usize, retention: Duration, metrics: Arc<Metrics>) -> Jobs {
        Jobs(Arc::new(Shared {
            registry: Mutex::new(Registry {
                jobs: HashMap::new(),
                queue: VecDeque::new(),
                running: None,
                ended: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            capacity,
            retention,
            metrics,
            remote: None,
        }))
    }

    /// A registry that mirrors a cluster's jobs (cluster/gateway.rs feeds it through
    /// [`Jobs::mirror`]); nothing is queued locally, and `cancel` calls `remote`.
    pub fn mirror_of(
        capacity: usize,
        retention: Duration,
        metrics: Arc<Metrics>,
        remote: RemoteCancel,
    ) -> Jobs {
        let jobs = Jobs::new(capacity, retention, metrics);
        let mut shared = Arc::into_inner(jobs.0).expect("just made");
        shared.remote = Some(remote);
        Jobs(Arc::new(shared))
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere while holding the lock leaves consistent data (every update is
        // a single assignment or push), so the poison is ignored.
        self.0.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Queues a job. The spec must already be checked (`AppState::submit` does).
    pub fn submit(&self, spec: JobSpec) -> Result<JobId, ApiError> {
        let mut reg = self.lock();
        if reg.closed {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        if reg.queue.len() >= self.0.capacity {
            self.0.metrics.rejected();
            let waiting = reg.queue.len() + usize::from(reg.running.is_some());
            let per_job = self.0.metrics.mean_job_seconds().unwrap_or(1.0);
            let retry = (waiting as f64 * per_job).ceil().max(1.0) as u64;
            return Err(ApiError::too_many(
                retry,
                format!(
                    "the queue is full ({} jobs waiting, --queue {}); retry in about {retry} s",
                    reg.queue.len(),
                    self.0.capacity
                ),
            ));
        }
        let id = new_id()?;
        let images = spec.request.batch;
        let position = reg.queue.len();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let entry = Entry {
            snap: JobSnapshot {
                id: id.clone(),
                state: JobState::Queued { position },
                image: 0,
                images,
                step: 0,
                steps: 0,
                progress: 0.0,
                eta: None,
                preview: None,
                images_done: Vec::new(),
                error: None,
                warnings: Vec::new(),
                created: SystemTime::now(),
                started: None,
                finished: None,
            },
            spec: Some(spec),
            cancel: Arc::new(AtomicBool::new(false)),
            events,
            done: watch::channel(false).0,
            submitted: Instant::now(),
            ended: None,
        };
        reg.jobs.insert(id.clone(), entry);
        reg.queue.push_back(id.clone());
        self.0.wake.notify_one();
        Ok(id)
    }

    /// The job as it is now; `None` for an unknown (or expired) id.
    pub fn snapshot(&self, id: &str) -> Option<JobSnapshot> {
        self.lock().snapshot(id)
    }

    /// The snapshot and a receiver of every later event, taken together so that none is
    /// missed between them.
    pub fn subscribe(&self, id: &str) -> Option<(JobSnapshot, broadcast::Receiver<JobEvent>)> {
        let reg = self.lock();
        let events = reg.jobs.get(id)?.events.subscribe();
        Some((reg.snapshot(id)?, events))
    }

    /// Cancels a queued job at once and the running one at its next step boundary.
    /// False for an unknown id; an ended job stays as it ended.
    pub fn cancel(&self, id: &str) -> bool {
        let mut reg = self.lock();
        let Some(entry) = reg.jobs.get(id) else {
            return false;
        };
        if let Some(remote) = &self.0.remote {
            if !entry.snap.state.is_finished() {
                remote(id);
            }
            return true;
        }
        match entry.snap.state {
            JobState::Queued { .. } => {
                reg.queue.retain(|q| q != id);
                self.end(&mut reg, id, JobState::Cancelled, None);
                self.announce_positions(&reg);
            }
            JobState::Running => entry.cancel.store(true, Ordering::Relaxed),
            _ => {}
        }
        true
    }

    /// Resolves when the job has ended, with its final snapshot; `None` for an unknown id.
    pub async fn wait(&self, id: &str) -> Option<JobSnapshot> {
        let mut done = self.lock().jobs.get(id)?.done.subscribe();
        // The sender lives as long as the entry; an entry dropped (expired) ends the wait too.
        let _ = done.wait_for(|d| *d).await;
        self.snapshot(id)
    }

    /// A wait that cancels the job if dropped before the job ends: a synchronous handler
    /// holds it, so a client that disconnects cancels its job.
    pub fn wait_or_cancel_on_drop(&self, id: &str) -> WaitGuard {
        WaitGuard {
            jobs: self.clone(),
            id: id.to_string(),
            armed: true,
        }
    }

    /// The running job, for A1111's global `/sdapi/v1/progress`.
    pub fn current(&self) -> Option<JobSnapshot> {
        let reg = self.lock();
        reg.snapshot(reg.running.as_ref()?)
    }

    /// Cancels the running job (A1111's `/sdapi/v1/interrupt`).
    pub fn interrupt_current(&self) {
        let reg = self.lock();
        if let (Some(remote), Some(id)) = (&self.0.remote, &reg.running) {
            remote(id);
        } else if let Some(e) = reg.running.as_ref().and_then(|id| reg.jobs.get(id)) {
            e.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Image `index` of a job (done, or still running with that image finished).
    pub fn image(&self, id: &str, index: usize) -> Option<JobImage> {
        let reg = self.lock();
        reg.jobs.get(id)?.snap.images_done.get(index).cloned()
    }

    /// Jobs by state (`queued`, `running`, `done`, `failed`, `cancelled`), and the queue length.
    pub fn counts(&self) -> (Vec<(&'static str, usize)>, usize) {
        let reg = self.lock();
        let mut counts: Vec<(&'static str, usize)> = ["queued", "running", "done", "failed", "cancelled"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        for e in reg.jobs.values() {
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == e.snap.state.name()) {
                c.1 += 1;
            }
        }
        (counts, reg.queue.len())
    }

    /// True while a job submitted now would be queued.
    pub fn accepting(&self) -> bool {
        let reg = self.lock();
        !reg.closed && reg.queue.len() < self.0.capacity
    }

    /// Drops ended jobs older than the retention time.
    pub fn sweep(&self) {
        let mut reg = self.lock();
        let retention = self.0.retention;
        while let Some(id) = reg.ended.front() {
            let expired = reg
                .jobs
                .get(id)
                .and_then(|e| e.ended)
                .is_none_or(|t| t.elapsed() >= retention);
            if !expired {
                break;
            }
            let id = reg.ended.pop_front().expect("front exists");
            reg.jobs.remove(&id);
        }
    }

    /// Shutdown: no new jobs, queued jobs fail with 503, the running one is cancelled; the
    /// worker stops after it.
    pub fn close(&self) {
        let mut reg = self.lock();
        reg.closed = true;
        if self.0.remote.is_some() {
            // The cluster's jobs outlive this gateway.
            return;
        }
        let queued: Vec<JobId> = reg.queue.drain(..).collect();
        for id in queued {
            let e = ApiError::unavailable("the server shut down before this job started");
            self.end(&mut reg, &id, JobState::Failed, Some(e));
        }
        if let Some(e) = reg.running.as_ref().and_then(|id| reg.jobs.get(id)) {
            e.cancel.store(true, Ordering::Relaxed);
        }
        self.0.wake.notify_all();
    }

    // The worker's side.

    /// Blocks until a job is queued (taking it: it is now running) or the queue is closed
    /// (`None`).
    pub(super) fn next(&self) -> Option<Taken> {
        let mut reg = self.lock();
        loop {
            if reg.closed {
                return None;
            }
            if let Some(id) = reg.queue.pop_front() {
                reg.running = Some(id.clone());
                let entry = reg.jobs.get_mut(&id).expect("queued jobs are registered");
                entry.snap.state = JobState::Running;
                entry.snap.started = Some(SystemTime::now());
                let _ = entry.events.send(JobEvent::Started);
                let taken = Taken {
                    id,
                    spec: entry.spec.take().expect("a queued job has its spec"),
                    cancel: entry.cancel.clone(),
                };
                self.announce_positions(&reg);
                return Some(taken);
            }
            reg = self.0.wake.wait(reg).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn step(&self, id: &str, update: StepUpdate) {
        self.0.metrics.step(update.seconds);
        let mut reg = self.lock();
        if let Some(e) = reg.jobs.get_mut(id) {
            let s = &mut e.snap;
            (s.image, s.images, s.step, s.steps) = (update.image, update.images, update.step, update.steps);
            (s.progress, s.eta) = (update.progress, update.eta);
            if update.preview.is_some() {
                s.preview = update.preview.clone();
            }
            let _ = e.events.send(JobEvent::Step(update));
        }
    }

    pub(super) fn warning(&self, id: &str, message: &str) {
        if let Some(e) = self.lock().jobs.get_mut(id) {
            e.snap.warnings.push(message.to_string());
        }
    }

    pub(super) fn add_image(&self, id: &str, image: JobImage) {
        let mut reg = self.lock();
        if let Some(e) = reg.jobs.get_mut(id) {
            let index = e.snap.images_done.len();
            let seed = image.seed;
            e.snap.images_done.push(image);
            let _ = e.events.send(JobEvent::Image { index, seed });
        }
    }

    /// The running job ended: done, cancelled (`crate::Error::Cancelled`) or failed.
    pub(super) fn finish(&self, id: &str, result: Result<(), ApiError>, cancelled: bool) {
        let mut reg = self.lock();
        reg.running = None;
        match result {
            Ok(()) => self.end(&mut reg, id, JobState::Done, None),
            Err(_) if cancelled => self.end(&mut reg, id, JobState::Cancelled, None),
            Err(e) => self.end(&mut reg, id, JobState::Failed, Some(e)),
        }
    }

    /// A cluster job as NATS has it (cluster/gateway.rs): the entry is made when new and
    /// only ever moves forward (updates may arrive out of order, or twice); `images` are
    /// the job's images from index `first` on, those already here are skipped.
    pub(super) fn mirror(&self, id: &str, m: Mirrored) {
        let mut reg = self.lock();
        if !reg.jobs.contains_key(id) {
            let (events, _) = broadcast::channel(EVENT_BUFFER);
            let snap = JobSnapshot {
                id: id.to_string(),
                state: JobState::Queued { position: 0 },
                image: 0,
                images: m.images,
                step: 0,
                steps: 0,
                progress: 0.0,
                eta: None,
                preview: None,
                images_done: Vec::new(),
                error: None,
                warnings: Vec::new(),
                created: m.created,
                started: None,
                finished: None,
            };
            let entry = Entry {
                snap,
                spec: None,
                cancel: Arc::new(AtomicBool::new(false)),
                events,
                done: watch::channel(false).0,
                submitted: Instant::now(),
                ended: None,
            };
            reg.jobs.insert(id.to_string(), entry);
        }
        let e = reg.jobs.get_mut(id).expect("inserted above");
        if e.snap.state.is_finished() {
            return;
        }
        let starts =
            matches!(e.snap.state, JobState::Queued { .. }) && m.state != (JobState::Queued { position: 0 });
        if starts {
            e.snap.state = JobState::Running;
            e.snap.started = m.started;
            let _ = e.events.send(JobEvent::Started);
        }
        e.snap.warnings = m.warnings;
        for (index, image) in m
            .images_from
            .into_iter()
            .enumerate()
            .map(|(i, img)| (i + m.first, img))
        {
            if index == e.snap.images_done.len() {
                let seed = image.seed;
                e.snap.images_done.push(image);
                let _ = e.events.send(JobEvent::Image { index, seed });
            }
        }
        if starts {
            reg.running = Some(id.to_string());
        }
        if m.state.is_finished() {
            if reg.running.as_deref() == Some(id) {
                reg.running = None;
            }
            self.end(&mut reg, id, m.state, m.error);
        }
    }

    /// Moves a job to its final state and tells its waiters and subscribers.
    fn end(&self, reg: &mut Registry, id: &str, state: JobState, error: Option<ApiError>) {
        let Some(e) = reg.jobs.get_mut(id) else {
            return;
        };
        e.snap.state = state;
        e.snap.error = error;
        e.snap.finished = Some(SystemTime::now());
        e.snap.eta = None;
        if state == JobState::Done {
            e.snap.progress = 1.0;
        }
        e.ended = Some(Instant::now());
        self.0
            .metrics
            .job_finished(state.name(), e.submitted.elapsed().as_secs_f64());
        let _ = e.events.send(JobEvent::Finished(Box::new(e.snap.clone())));
        e.done.send_replace(true);
        reg.ended.push_back(id.to_string());
        while reg.ended.len() > MAX_ENDED_JOBS {
            if let Some(oldest) = reg.ended.pop_front() {
                reg.jobs.remove(&oldest);
            }
        }
    }

    /// Each queued job's new place after the queue moved.
    fn announce_positions(&self, reg: &Registry) {
        for (position, id) in reg.queue.iter().enumerate() {
            if let Some(e) = reg.jobs.get(id) {
                let _ = e.events.send(JobEvent::Queued { position });
            }
        }
    }
}

impl Registry {
    /// A job's snapshot with its queue position as of now (positions change as the jobs
    /// ahead leave, so they are read from the queue, not stored).
    fn snapshot(&self, id: &str) -> Option<JobSnapshot> {
        let mut snap = self.jobs.get(id)?.snap.clone();
        if let JobState::Queued { position } = &mut snap.state {
            *position = self.queue.iter().position(|q| q == id).unwrap_or(0);
        }
        Some(snap)
    }
}

/// A cluster job's record, for [`Jobs::mirror`].
pub struct Mirrored {
    pub state: JobState,
    pub images: usize,
    pub created: SystemTime,
    pub started: Option<SystemTime>,
    pub error: Option<ApiError>,
    pub warnings: Vec<String>,
    /// Images `first`, `first + 1`...
    pub first: usize,
    pub images_from: Vec<JobImage>,
}

/// Waits for a job and cancels it when dropped first (see [`Jobs::wait_or_cancel_on_drop`]).
pub struct WaitGuard {
    jobs: Jobs,
    id: JobId,
    armed: bool,
}

impl WaitGuard {
    /// The final snapshot (`None` if the job expired meanwhile, which retention makes
    /// impossible for a waiter).
    pub async fn finish(mut self) -> Option<JobSnapshot> {
        let snap = self.jobs.wait(&self.id).await;
        self.armed = false;
        snap
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.armed {
            self.jobs.cancel(&self.id);
        }
    }
}

/// 16 hex digits from the OS's random source.
pub(super) fn new_id() -> Result<JobId, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("the OS random source failed: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
