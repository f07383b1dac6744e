//! Child processes: run a program (no shell) with a time limit, or start
//! one and let it go (the reboot command).
//!
//! The time limit covers the whole run: the wait for the program to exit
//! *and* the wait for its output pipes to close. Both pipes are read on
//! their own threads, so neither a program that never exits nor a
//! background grandchild that keeps stdout open can hold the caller past
//! the limit.
//!
//! The program runs in a process group of its own, and at the limit the
//! whole group is sent SIGKILL (`kill(-pgid)`, through `rustix`), then the
//! program itself is killed with [`std::process::Child::kill`] in case the
//! group could not be signalled. A descendant that left the group
//! (`setsid`, `setpgid`) survives; its reader thread is abandoned rather
//! than joined, so the caller still returns at the limit.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// What a finished program said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Which pipe a reader thread read.
#[derive(Debug, Clone, Copy)]
enum Pipe {
    Stdout,
    Stderr,
}

/// Read `pipe` to its end on a thread of its own; the text goes to `tx`.
fn read_on_thread(
    pipe: Option<impl Read + Send + 'static>,
    which: Pipe,
    tx: mpsc::Sender<(Pipe, String)>,
) {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let mut bytes = Vec::new();
            let _ = p.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let _ = tx.send((which, text));
    });
}

/// Wait for `child` to exit until `deadline`; `None` when it did not.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Send SIGKILL to the process group `child` leads, then to `child`
/// itself (the fallback when the group could not be signalled), and reap
/// it. Called while `child` is unreaped, so its pid, the group's id,
/// cannot have been reused.
fn kill_group(child: &mut Child) {
    let pgid = Pid::from_child(child);
    // kill(-1) would signal every process we may signal; a child is never
    // init, but the guard keeps that out of reach.
    if pgid != Pid::INIT
        && let Err(e) = kill_process_group(pgid, Signal::KILL)
    {
        tracing::debug!("killing process group {pgid:?}: {e}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn timed_out(program: &str, limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{program} did not finish within {limit:?}; killed"),
    )
}

/// Run `program args...` and wait up to `limit` for it to exit and close
/// its output. Past the limit its process group is killed and the error
/// is [`std::io::ErrorKind::TimedOut`].
pub fn run(program: &str, args: &[String], limit: Duration) -> std::io::Result<Output> {
    run_holding(program, args, limit, None)
}

/// [`run`], the program's stdin being `hold` (a lock file): the program
/// and everything it starts hold the lock with it, so that if this
/// process dies first the lock stays taken until they are done (a
/// regeneration orphaned by a killed daemon is waited for, not raced).
pub fn run_holding(
    program: &str,
    args: &[String],
    limit: Duration,
    hold: Option<&std::fs::File>,
) -> std::io::Result<Output> {
    let deadline = Instant::now() + limit;
    let stdin = match hold {
        Some(file) => Stdio::from(file.try_clone()?),
        None => Stdio::null(),
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    // The child leads its own group: the group id is its pid.
    let (tx, rx) = mpsc::channel();
    read_on_thread(child.stdout.take(), Pipe::Stdout, tx.clone());
    read_on_thread(child.stderr.take(), Pipe::Stderr, tx);

    // The pipes first: they close when the program (and whatever it
    // started) is done, which wakes us at once; the child stays unreaped
    // meanwhile, so its group id cannot be reused before a kill.
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || stderr.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((Pipe::Stdout, text)) => stdout = Some(text),
            Ok((Pipe::Stderr, text)) => stderr = Some(text),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group(&mut child);
                return Err(timed_out(program, limit));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = match wait_until(&mut child, deadline) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill_group(&mut child);
            return Err(timed_out(program, limit));
        }
        Err(e) => {
            kill_group(&mut child);
            return Err(e);
        }
    };
    Ok(Output {
        code: status.code(),
        stdout: stdout.unwrap_or_default(),
        stderr: stderr.unwrap_or_default(),
    })
}

/// Whether a process of this system has `path` open (a link in
/// `/proc/PID/fd` names it): another program is writing it now, as
/// grub-mkconfig holds its `grub.cfg.new` open from before it runs its
/// scripts until it has installed grub.cfg. This is about processes, so
/// it reads the system's own `/proc` whatever the host root; processes
/// whose descriptors cannot be read (another user's, when not root) are
/// not seen.
pub fn held_open(path: &std::path::Path) -> bool {
    // The kernel names open files by their canonical path.
    let path = &path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|p| {
            std::fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == *path))
            })
        })
}

/// Start `program args...` in the background.
pub fn spawn_detached(program: &str, args: &[String]) -> std::io::Result<()> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_held_open_by_a_process_is_seen_until_it_closes() {
        let dir = std::env::temp_dir().join(format!("pcipass-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grub.cfg.new");
        std::fs::write(&path, b"").unwrap();
        let path = path.canonicalize().unwrap();
        assert!(!held_open(&path));
        let file = std::fs::File::open(&path).unwrap();
        assert!(held_open(&path), "our own descriptor is a process's");
        drop(file);
        assert!(!held_open(&path));
        // A writer that holds it until its stdin closes.
        let mut child = Command::new("sh")
            .args(["-c", "exec 3<\"$0\"; read _", &path.to_string_lossy()])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        while !held_open(&path) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the writer ended early"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(!held_open(&path));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn sh(script: &str, limit: Duration) -> (std::io::Result<Output>, Duration) {
        let started = Instant::now();
        let out = run("/bin/sh", &["-c".to_owned(), script.to_owned()], limit);
        (out, started.elapsed())
    }

    /// True once `pid` is gone or a zombie.
    fn dead(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    #[test]
    fn output_and_exit_code_come_back() {
        let (out, _) = sh("echo out; echo err >&2; exit 3", Duration::from_secs(10));
        assert_eq!(
            out.unwrap(),
            Output {
                code: Some(3),
                stdout: "out\n".into(),
                stderr: "err\n".into(),
            }
        );
        let (out, _) = sh("true", Duration::from_secs(10));
        assert_eq!(out.unwrap().code, Some(0));
    }

    #[test]
    fn output_larger_than_a_pipe_buffer_is_read_whole() {
        let (out, _) = sh(
            "i=0; while [ $i -lt 20000 ]; do echo line-$i; echo e-$i >&2; i=$((i+1)); done",
            Duration::from_secs(30),
        );
        let out = out.unwrap();
        assert_eq!(out.code, Some(0));
        assert_eq!(out.stdout.lines().count(), 20000);
        assert_eq!(out.stderr.lines().count(), 20000);
    }

    #[test]
    fn a_missing_program_is_an_io_error() {
        let err = run("/nonexistent/xen-cmdline", &[], Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    /// Half the run time of the hung programs below: a return before it
    /// means the program was killed, not waited for. Far above the 1 s
    /// limit, so a busy machine cannot make the test fail.
    const KILLED_BEFORE: Duration = Duration::from_secs(30);

    /// The grandchild whose pid is in `pidfile` is gone (killed with its
    /// group); the wait ends as soon as it is, the bound is a hang guard.
    fn assert_grandchild_killed(pidfile: &std::path::Path) {
        let pid = std::fs::read_to_string(pidfile).unwrap();
        let pid = pid.trim();
        let until = Instant::now() + KILLED_BEFORE;
        while !dead(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(pid), "the grandchild {pid} was killed with its group");
    }

    #[test]
    fn a_hung_program_is_killed_at_the_limit() {
        let (out, took) = sh("sleep 60", Duration::from_secs(1));
        assert_eq!(out.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < KILLED_BEFORE, "{took:?}");
    }

    #[test]
    fn a_grandchild_holding_stdout_does_not_outlive_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 60 & echo $! > '{}'; echo started", pidfile.display());
        let (out, took) = sh(&script, Duration::from_secs(1));
        assert_eq!(out.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < KILLED_BEFORE, "{took:?}");
        assert_grandchild_killed(&pidfile);
    }

    /// The other kill site: the output is closed at once, but the program
    /// and a grandchild in its group run on past the limit.
    #[test]
    fn a_grandchild_is_killed_when_the_program_outlives_its_closed_output() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "exec >/dev/null 2>&1; sleep 60 & echo $! > '{}'; sleep 60",
            pidfile.display()
        );
        let (out, took) = sh(&script, Duration::from_secs(1));
        assert_eq!(out.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(took < KILLED_BEFORE, "{took:?}");
        assert_grandchild_killed(&pidfile);
    }
}
