//! The deadline counts the policy's own CPU time. The epoch ticker measures
//! the wall clock, and on a busy host a thread can wait for a core longer
//! than the deadline while the policy ran for microseconds: the host's
//! doing (other processes, or the low-priority lane it moved the policy
//! to), not the policy's. So when a call reaches its deadline on the wall
//! clock, the epoch callback, which runs on the policy's own thread, reads
//! that thread's CPU clock and grants the CPU time still unused. The wall
//! clock stays bounded: no call runs past [`wall_cap`] of its deadline.

use std::time::{Duration, Instant};

/// Added to the deadline for the wall-clock cap of short deadlines: a few
/// scheduler slices of a loaded host.
const WALL_SLACK: Duration = Duration::from_millis(50);

/// The longest a call may take on the wall clock: twice its deadline, and
/// at least the deadline plus [`WALL_SLACK`].
pub(crate) fn wall_cap(deadline: Duration) -> Duration {
    (deadline * 2).max(deadline + WALL_SLACK)
}

/// When the current call (or instantiation) started, on both clocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallClock {
    started: Instant,
    cpu_started: Option<Duration>,
    deadline: Duration,
    /// What the clocks read when the call was stopped, for its failure.
    stopped: Option<Stopped>,
}

/// The clocks of a call stopped at its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stopped {
    /// CPU time the call's thread used, where the platform tells it.
    pub(crate) cpu: Option<Duration>,
    pub(crate) wall: Duration,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match self.cpu {
            Some(cpu) => write!(f, "{:.1} ms of CPU in {:.1} ms", ms(cpu), ms(self.wall)),
            None => write!(f, "{:.1} ms", ms(self.wall)),
        }
    }
}

impl CallClock {
    /// Starts the clocks of a call whose deadline is `deadline_ticks`
    /// (milliseconds); on the thread that runs it.
    pub(crate) fn start(deadline_ticks: u64) -> CallClock {
        CallClock::start_at(deadline_ticks, thread_cpu_time())
    }

    /// As [`Self::start`], with the thread's CPU clock already read (the
    /// caller read it just before, for its own account of the call).
    pub(crate) fn start_at(deadline_ticks: u64, cpu_now: Option<Duration>) -> CallClock {
        CallClock {
            started: Instant::now(),
            cpu_started: cpu_now,
            deadline: Duration::from_millis(deadline_ticks),
            stopped: None,
        }
    }

    /// At the deadline on the wall clock: the ticks to grant when the
    /// thread used less CPU than the deadline and the wall clock is under
    /// its cap; `None` stops the call, and [`Self::stopped`] then tells the
    /// clocks. Runs on the call's thread.
    pub(crate) fn ticks_left(&mut self) -> Option<u64> {
        let wall = self.started.elapsed();
        let used = thread_cpu_time()
            .zip(self.cpu_started)
            .map(|(now, started)| now.saturating_sub(started));
        let left = match used {
            Some(used) => wall_cap(self.deadline)
                .saturating_sub(wall)
                .min(self.deadline.saturating_sub(used)),
            None => Duration::ZERO,
        };
        if left.is_zero() {
            self.stopped = Some(Stopped { cpu: used, wall });
            return None;
        }
        // Whole ticks, rounded up: a tick is a millisecond.
        Some(u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX))
    }

    /// The clocks when the call was stopped; `None` while it was not.
    pub(crate) fn stopped(&self) -> Option<Stopped> {
        self.stopped
    }
}

impl Default for CallClock {
    /// A placeholder until a call starts; reads no clock (a system call),
    /// since every instantiation and call sets its own.
    fn default() -> Self {
        CallClock::start_at(0, None)
    }
}

/// Where a decision started, on both clocks: the host's judgement of a
/// policy's cost starts here, after any instance the call had to create.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallStart {
    pub(crate) wall: Instant,
    pub(crate) cpu: Option<Duration>,
    /// Whether the policy's `decide` was entered; not when no instance
    /// could be created for it.
    pub(crate) entered: bool,
}

impl CallStart {
    pub(crate) fn now() -> CallStart {
        CallStart {
            cpu: thread_cpu_time(),
            wall: Instant::now(),
            entered: false,
        }
    }

    /// CPU time the thread has used since; `None` where the platform has no
    /// thread clock.
    pub(crate) fn cpu_used(&self) -> Option<Duration> {
        Some(thread_cpu_time()?.saturating_sub(self.cpu?))
    }
}

/// CPU time the calling thread has used, where the platform tells it.
#[cfg(unix)]
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a pointer to a local we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// Elsewhere the deadline is the wall clock alone.
#[cfg(not(unix))]
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_cap_is_twice_the_deadline_and_at_least_the_slack_more() {
        assert_eq!(wall_cap(Duration::from_millis(5)), Duration::from_millis(55));
        assert_eq!(wall_cap(Duration::from_millis(1000)), Duration::from_millis(2000));
    }

    #[test]
    fn a_call_that_used_its_cpu_gets_nothing_more() {
        let mut clock = CallClock::start(1);
        let start = thread_cpu_time().expect("a thread CPU clock");
        let mut x = 1u64;
        while thread_cpu_time().expect("clock") - start < Duration::from_millis(2) {
            x = std::hint::black_box(x.wrapping_mul(3));
        }
        assert_eq!(clock.ticks_left(), None);
        let stopped = clock.stopped().expect("stopped");
        assert!(
            stopped.cpu.expect("a thread CPU clock") >= Duration::from_millis(2),
            "{stopped}"
        );
        assert!(stopped.to_string().contains("ms of CPU in"), "{stopped}");
    }

    #[test]
    fn a_call_that_waited_gets_its_unused_cpu() {
        let mut clock = CallClock::start(20);
        // Waiting (as for a core) uses no CPU.
        std::thread::sleep(Duration::from_millis(5));
        let left = clock.ticks_left().expect("CPU left");
        assert!((1..=20).contains(&left), "{left}");
    }
}
