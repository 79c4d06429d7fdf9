//! Dropping root: switch to an unprivileged user after the TUN device and the
//! UDP socket are open, and prove it worked.
//!
//! What stays needed after the drop: nothing. The TUN fd and the bound UDP
//! socket keep working for an unprivileged process (permission checks happen
//! at open/bind time), and a non-persistent TUN device disappears when its last
//! fd closes, which needs no privilege either. So no capability is kept
//! (`PR_SET_KEEPCAPS` stays 0, so `setresuid` from root clears the permitted
//! and effective sets, see capabilities(7) "Effect of user ID changes on
//! capabilities"). Re-adding addresses or routes at reload time would need
//! CAP_NET_ADMIN; no such feature exists yet, so none is kept.
//!
//! Order (as in OpenSSH's `permanently_set_uid` and boringtun's
//! `drop_privileges`): `setgroups` (supplementary groups: only the user's
//! primary group), `setresgid`, `setresuid` (real, effective and saved, so
//! there is no way back), `PR_SET_NO_NEW_PRIVS`. Then verify: `/proc/self/status`
//! must show the new uid/gid in all four slots and `CapEff`, `CapPrm` of 0,
//! and `setuid(0)` must fail. Any failure is an error: the caller refuses to run.
//!
//! Must be called while the process has a single thread (glibc broadcasts
//! set*id to all threads, but we don't rely on that): the IO shell drops
//! privileges before it starts the tokio runtime.

use std::ffi::{CStr, CString};

/// Why the drop failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("user {0:?} not found (getpwnam)")]
    NoSuchUser(String),
    #[error("user {0:?} is root (uid 0): configure an unprivileged user")]
    IsRoot(String),
    #[error("{call} failed: {err}")]
    Syscall {
        call: &'static str,
        err: std::io::Error,
    },
    #[error("privileges still present after the drop: {0}")]
    NotDropped(String),
    #[error("not running as root and not already user {0:?}: cannot switch user")]
    NotRoot(String),
}

/// A user's ids from the password database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

/// Looks a user up by name (or numeric `uid[:gid]`).
pub fn lookup_user(user: &str) -> Result<UserIds, PrivError> {
    if let Some((u, g)) = user.split_once(':') {
        if let (Ok(uid), Ok(gid)) = (u.parse(), g.parse()) {
            return Ok(UserIds { uid, gid });
        }
    }
    let name = CString::new(user).map_err(|_| PrivError::NoSuchUser(user.into()))?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf outlives the use of pw.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        if let Ok(uid) = user.parse::<u32>() {
            return Ok(UserIds { uid, gid: uid });
        }
        return Err(PrivError::NoSuchUser(user.into()));
    }
    Ok(UserIds {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

fn check(call: &'static str, rc: libc::c_int) -> Result<(), PrivError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(PrivError::Syscall {
            call,
            err: std::io::Error::last_os_error(),
        })
    }
}

/// The parsed privilege lines of `/proc/self/status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcStatus {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub cap_eff: u64,
    pub cap_prm: u64,
    pub no_new_privs: bool,
}

/// Parses `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> ProcStatus {
    let mut s = ProcStatus::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let ids = || {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        };
        match k {
            "Uid" => s.uids = ids(),
            "Gid" => s.gids = ids(),
            "CapEff" => s.cap_eff = u64::from_str_radix(v, 16).unwrap_or(u64::MAX),
            "CapPrm" => s.cap_prm = u64::from_str_radix(v, 16).unwrap_or(u64::MAX),
            "NoNewPrivs" => s.no_new_privs = v == "1",
            _ => {}
        }
    }
    s
}

/// Reads and parses `/proc/self/status`.
pub fn proc_status() -> Result<ProcStatus, PrivError> {
    std::fs::read_to_string("/proc/self/status")
        .map(|t| parse_status(&t))
        .map_err(|err| PrivError::Syscall {
            call: "read /proc/self/status",
            err,
        })
}

/// Checks that the process runs as `ids` with no capabilities.
pub fn verify_dropped(ids: UserIds) -> Result<(), PrivError> {
    let st = proc_status()?;
    if st.uids.len() != 4 || st.uids.iter().any(|u| *u != ids.uid) {
        return Err(PrivError::NotDropped(format!("uids {:?}", st.uids)));
    }
    if st.gids.len() != 4 || st.gids.iter().any(|g| *g != ids.gid) {
        return Err(PrivError::NotDropped(format!("gids {:?}", st.gids)));
    }
    if st.cap_eff != 0 || st.cap_prm != 0 {
        return Err(PrivError::NotDropped(format!(
            "CapEff {:016x} CapPrm {:016x}",
            st.cap_eff, st.cap_prm
        )));
    }
    // SAFETY: plain syscalls.
    if unsafe { libc::setuid(0) } == 0 || unsafe { libc::seteuid(0) } == 0 {
        return Err(PrivError::NotDropped("setuid(0) succeeded".into()));
    }
    Ok(())
}

/// Switches the whole (single-threaded) process to `user` permanently and
/// verifies it. Running already as that user (and not as root) is accepted.
pub fn drop_privileges(user: &str) -> Result<UserIds, PrivError> {
    let ids = lookup_user(user)?;
    if ids.uid == 0 {
        return Err(PrivError::IsRoot(user.into()));
    }
    // SAFETY: plain syscalls with valid arguments.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        if euid == ids.uid {
            verify_dropped(ids)?;
            return Ok(ids);
        }
        return Err(PrivError::NotRoot(user.into()));
    }
    let groups = [ids.gid as libc::gid_t];
    // SAFETY: `groups` is a valid array of 1 gid.
    check("setgroups", unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    check("setresgid", unsafe {
        libc::setresgid(ids.gid, ids.gid, ids.gid)
    })?;
    check("setresuid", unsafe {
        libc::setresuid(ids.uid, ids.uid, ids.uid)
    })?;
    check("prctl(PR_SET_NO_NEW_PRIVS)", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })?;
    verify_dropped(ids)?;
    Ok(ids)
}

/// The name of a uid, for logs.
pub fn user_name(uid: u32) -> Option<String> {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers; the name is copied before buf is dropped.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into buf, NUL-terminated.
    Some(
        unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let t = "Name:\tx\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
                 CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n";
        let s = parse_status(t);
        assert_eq!(s.uids, vec![65534; 4]);
        assert_eq!(s.gids, vec![65534; 4]);
        assert_eq!((s.cap_eff, s.cap_prm), (0, 0));
        assert!(s.no_new_privs);
        let root = parse_status("Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n");
        assert_eq!(root.cap_eff, 0x1ff_ffff_ffff);
    }

    #[test]
    fn looks_up_users() {
        assert_eq!(lookup_user("root").unwrap(), UserIds { uid: 0, gid: 0 });
        assert_eq!(
            lookup_user("1234:99").unwrap(),
            UserIds { uid: 1234, gid: 99 }
        );
        assert!(matches!(
            lookup_user("no-such-user-here"),
            Err(PrivError::NoSuchUser(_))
        ));
        assert!(matches!(drop_privileges("root"), Err(PrivError::IsRoot(_))));
    }

    /// Runs the real drop in a child process (it is irreversible).
    #[test]
    fn drop_in_child_process() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: skipping the real privilege drop");
            return;
        }
        // SAFETY: the child only calls async-signal-safe-ish code and _exit;
        // the test harness is multi-threaded, so keep the child minimal.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match drop_privileges("65534:65534") {
                Ok(_) => 0,
                Err(_) => 1,
            };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
