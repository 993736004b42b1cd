//! Small helpers with no better home.

pub mod time;

/// The user running `capi`, for lock info: the account name of the real
/// user id (the system's user database, not `$USER`: no environment is
/// read outside the CLI's settings layer), or `uid<N>` without an entry.
pub(crate) fn current_user() -> String {
    let uid = unsafe { libc::getuid() };
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: every pointer is valid for the call; the name is copied out
    // before `buf` goes away.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pw.pw_name.is_null() {
        return format!("uid{uid}");
    }
    unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// This machine's host name.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_user_is_the_account_of_the_real_uid() {
        let name = super::current_user();
        assert!(!name.is_empty());
        // root's account is `root` on every system these tests run on.
        if unsafe { libc::getuid() } == 0 {
            assert_eq!(name, "root");
        }
    }
}
