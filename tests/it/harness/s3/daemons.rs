//! Ceph's daemons as children of the test process, and the clean-up of those an earlier test
//! process left behind.
//!
//! A daemon is spawned with a parent-death signal (SIGKILL), so that it dies with the test process
//! instead of holding its ports and memory after `cargo test` ends. The kernel sends that signal
//! when the *thread* that forked the child exits, and cargo runs each test on a thread of its own:
//! every daemon is therefore forked by one spawner thread that lives as long as the process.
//!
//! A daemon that survived anyway (a test process killed before the signal could be armed, a
//! machine without the signal) is found by its command line, which names the cluster's
//! configuration file.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use rustix::process::{getppid, kill_process, set_parent_process_death_signal, Pid, Signal};

use crate::harness::wait_until;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` so that it receives SIGKILL when this test process ends.
pub fn spawn_daemon(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ceph-spawner".to_owned())
            .spawn(move || {
                for (mut command, reply) in requests {
                    let _ = reply.send(command.spawn());
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the thread that spawns Ceph's daemons: {e}"));
        sender
    });
    let parent = Pid::from_raw(std::process::id() as i32);
    // SAFETY: between fork and exec the closure only makes two system calls (prctl and getppid),
    // which allocate nothing and take no lock.
    unsafe {
        command.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // The test process may have ended between the fork and the prctl: then no signal would
            // ever come, so the daemon must not start.
            if getppid() != parent {
                return Err(io::Error::other(
                    "the test process ended before the daemon started",
                ));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner
        .send((command, reply))
        .unwrap_or_else(|e| panic!("the thread that spawns Ceph's daemons is gone: {e}"));
    answer
        .recv()
        .unwrap_or_else(|e| panic!("the thread that spawns Ceph's daemons did not answer: {e}"))
}

/// Kills every process whose command line names `conf` (daemons of an earlier run over the same
/// directory) and waits until they are gone.
pub fn kill_users_of(conf: &Path) {
    let users = processes_naming(conf);
    for pid in &users {
        // Already gone is fine: that is the goal.
        let _ = kill_process(*pid, Signal::KILL);
    }
    let gone = wait_until(Duration::from_secs(20), || {
        processes_naming(conf)
            .iter()
            .all(|pid| !users.contains(pid))
    });
    assert!(
        gone,
        "daemons of an earlier test run ({users:?}, using {}) survived SIGKILL for 20 s",
        conf.display()
    );
}

/// What tells a process apart from a later one that reuses its id: `<pid> <start time>` (in clock
/// ticks since boot, field 22 of `/proc/<pid>/stat`); None when no such process runs.
pub fn process_identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may hold spaces: count from its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_time = after_name.split_whitespace().nth(19)?;
    Some(format!("{pid} {start_time}"))
}

/// The processes one of whose arguments is exactly `path`.
fn processes_naming(path: &Path) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let wanted = path.as_os_str().as_bytes();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = Pid::from_raw(entry.file_name().to_str()?.parse().ok()?)?;
            // A process that exits meanwhile has no command line left to read: not a user.
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|byte| *byte == 0)
                .any(|argument| argument == wanted)
                .then_some(pid)
        })
        .collect()
}
