//! Small helpers shared across the crate.

use sha2::{Digest, Sha256};

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A new random identifier: 16 random bytes as hex. Unguessable, so an id seen in one
/// user's data says nothing about another's.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Hands memory the allocator holds but no longer uses back to the operating system (glibc
/// keeps freed memory in its arenas; other allocators and systems: nothing to do). For after
/// start-up's burst of allocations, so an idle server is as small as what it still uses.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of glibc's own heap; it takes no
    // pointers and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops this process's mappings of its own executable's start-up code from its resident set.
///
/// Starting touches code that idling never runs again (migrations, installing and loading
/// plugins, building the OpenAPI document), and the kernel maps code in 64 KiB runs around
/// each page touched, so after start-up most of the binary's code is mapped, though little of
/// it is used. This unmaps the executable's read-only mappings (code and constants); the
/// pages stay in the kernel's page cache, and what the server runs afterwards is mapped again
/// on first use, from there. Only mappings with no private copy of a page (no relocation or
/// breakpoint wrote to them) are touched, so nothing is lost: each page comes back as it is
/// in the file. Returns the KiB the resident set shrank by (0 where not supported).
pub fn release_start_up_code() -> u64 {
    #[cfg(target_os = "linux")]
    {
        linux::release_start_up_code().unwrap_or_else(|e| {
            tracing::debug!("start-up code pages kept: {e}");
            0
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    /// A mapping of the executable, from `/proc/self/smaps`.
    struct Mapping {
        start: usize,
        end: usize,
        rss_kib: u64,
        anonymous_kib: u64,
    }

    fn executable_mappings() -> io::Result<Vec<Mapping>> {
        let exe = std::fs::read_link("/proc/self/exe")?;
        let exe = exe.to_string_lossy();
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut found = Vec::new();
        let mut current: Option<Mapping> = None;
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            let Some(first) = fields.next() else { continue };
            if let Some((start, end)) = first.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                found.extend(current.take());
                let perms = fields.next().unwrap_or("");
                // The path is the sixth field; a replaced binary shows " (deleted)" after it
                // and is left alone.
                let path = line
                    .splitn(6, char::is_whitespace)
                    .nth(5)
                    .unwrap_or("")
                    .trim();
                if path == exe && (perms == "r-xp" || perms == "r--p") {
                    current = Some(Mapping {
                        start,
                        end,
                        rss_kib: 0,
                        anonymous_kib: 0,
                    });
                }
                continue;
            }
            if let Some(m) = current.as_mut() {
                let kib = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                match first {
                    "Rss:" => m.rss_kib = kib,
                    "Anonymous:" => m.anonymous_kib = kib,
                    _ => {}
                }
            }
        }
        found.extend(current);
        Ok(found)
    }

    #[cfg(test)]
    pub(super) fn executable_rss_kib() -> u64 {
        executable_mappings()
            .map(|ms| ms.iter().map(|m| m.rss_kib).sum())
            .unwrap_or(0)
    }

    pub(super) fn release_start_up_code() -> io::Result<u64> {
        let mut released = 0;
        for m in executable_mappings()? {
            // A private copy of a page (relocated read-only data, a debugger's breakpoint)
            // would be lost: such a mapping stays as it is.
            if m.anonymous_kib > 0 {
                continue;
            }
            // SAFETY: the range is a private, read-only mapping of the executable file with no
            // page of its own (checked above): dropping its pages loses nothing, and any
            // access afterwards, from any thread, maps the page from the file again.
            let rc = unsafe {
                libc::madvise(
                    m.start as *mut libc::c_void,
                    m.end - m.start,
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            released += m.rss_kib;
        }
        Ok(released)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The executable's resident code and constants, in KiB.
    fn executable_rss_kib() -> u64 {
        super::linux::executable_rss_kib()
    }

    #[test]
    fn start_up_code_pages_are_released_and_the_process_runs_on() {
        let before = executable_rss_kib();
        assert!(before > 0, "the test binary's code is mapped");
        let released = super::release_start_up_code();
        let after = executable_rss_kib();
        assert!(released > 0, "nothing released of {before} KiB");
        assert!(
            after < before,
            "{after} KiB resident after, {before} KiB before"
        );
        // Code not run since start-up comes back from the file when it is run again.
        assert_eq!(super::sha256_hex(b"abc").len(), 64);
        let ids: std::collections::HashSet<_> = (0..100).map(|_| super::new_id()).collect();
        assert_eq!(ids.len(), 100);
    }
}
