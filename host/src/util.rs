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
