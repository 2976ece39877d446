//! Workspaces: where each session's, user's and the default one lives under the data
//! directory (a client never chooses a path), and their disk quota (`workspace_quota_bytes`).
//!
//! wasmtime-wasi offers no hook on file writes, and checking the directory's size after a call
//! would let one call write without bound. So the four ways a guest makes a file longer —
//! `descriptor.write`, `descriptor.set-size` and the output streams of
//! `descriptor.write-via-stream` and `descriptor.append-via-stream` — are defined again in the
//! linker around wasmtime-wasi's own implementation: each first reserves the bytes it adds
//! past the file's end, and a write that would take the workspace over its quota fails in the
//! guest. `write` and `set-size` fail with `insufficient-space` (ENOSPC); a stream write fails
//! with an error that WASI 0.2's preview-1 adapter (what Rust's `wasm32-wasip2` std writes
//! through) can only report as EIO, so a tool error after a refused write also says that the
//! workspace is full (see [`WorkspaceQuota::refused`]).
//!
//! What counts: the sizes of the regular files under the workspace, measured once when a call
//! first grows a file while no other call on this host holds that workspace, plus what calls
//! then add. Overwriting bytes inside a file costs nothing; bytes freed during a call (a
//! deleted file) count until the workspace is measured again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use wasmtime::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::filesystem::types::{ErrorCode, HostDescriptor};
use wasmtime_wasi::p2::{DynOutputStream, FsError, OutputStream, Pollable, StreamError};

use super::state::{CallState, LogSink};

/// The `wasi:filesystem/types` instance wasmtime-wasi 48 defines; a guest built against any
/// 0.2.x version links to it. A tool test writes past the quota, so a wasmtime-wasi upgrade
/// that renames it fails the suite rather than silently dropping the quota.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// POSIX ENOSPC (28 on Linux, macOS and the BSDs): wasmtime-wasi turns it into the WASI
/// `insufficient-space` code, which the guest's libc reports as "No space left on device".
const ENOSPC: i32 = 28;

/// The usage of one workspace, shared by every call on this host that holds it.
pub struct WorkspaceUsage {
    dir: PathBuf,
    limit: u64,
    /// Bytes of the workspace when first measured (on the first growth).
    measured: tokio::sync::OnceCell<u64>,
    /// Bytes calls have added since.
    added: AtomicU64,
}

impl WorkspaceUsage {
    /// Measures the workspace if that has not happened yet. Walking a directory is blocking
    /// file-system work: off the async workers.
    async fn measure(&self) -> u64 {
        *self
            .measured
            .get_or_init(|| {
                let dir = self.dir.clone();
                async move {
                    tokio::task::spawn_blocking(move || directory_size(&dir))
                        .await
                        .unwrap_or(u64::MAX)
                }
            })
            .await
    }

    /// Reserves `growth` bytes; false if the workspace would pass its quota. Needs
    /// [`measure`](Self::measure) to have run (a stream is created by an async import that
    /// does that).
    fn reserve(&self, growth: u64) -> bool {
        if growth == 0 {
            return true;
        }
        let Some(measured) = self.measured.get().copied() else {
            return false;
        };
        self.added
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |added| {
                let total = measured.saturating_add(added).saturating_add(growth);
                (total <= self.limit).then_some(added + growth)
            })
            .is_ok()
    }
}

/// The quota as one call sees it: the workspace's shared usage, and whether a write of this
/// call was refused.
#[derive(Clone)]
pub struct WorkspaceQuota {
    usage: Arc<WorkspaceUsage>,
    refused: Arc<AtomicBool>,
}

impl WorkspaceQuota {
    /// The quota in bytes, if a write of this call was refused for it.
    pub fn refused(&self) -> Option<u64> {
        self.refused
            .load(Ordering::Relaxed)
            .then_some(self.usage.limit)
    }

    /// Reserves `growth` bytes, or notes the refusal (in the call's log too, for the operator).
    fn reserve(&self, growth: u64, log: &LogSink) -> bool {
        if self.usage.reserve(growth) {
            return true;
        }
        if !self.refused.swap(true, Ordering::Relaxed) {
            log.line(
                tracing::Level::WARN,
                &format!(
                    "workspace quota of {} bytes reached: a write was refused",
                    self.usage.limit
                ),
            );
        }
        false
    }
}

/// The workspaces calls hold at the moment, so concurrent calls on one workspace share one
/// count. An entry lives as long as a call holds it; the next call measures afresh.
#[derive(Default)]
pub struct WorkspaceQuotas {
    open: Mutex<HashMap<PathBuf, Weak<WorkspaceUsage>>>,
}

impl WorkspaceQuotas {
    /// The quota of `dir` (`limit` bytes) for one call.
    pub fn quota(&self, dir: &Path, limit: u64) -> WorkspaceQuota {
        let mut open = self.open.lock().expect("workspace quotas lock");
        let usage = match open.get(dir).and_then(Weak::upgrade) {
            Some(usage) => usage,
            None => {
                // Bounded by the number of calls running at once: ended calls' entries go.
                open.retain(|_, usage| usage.strong_count() > 0);
                let usage = Arc::new(WorkspaceUsage {
                    dir: dir.to_owned(),
                    limit,
                    measured: tokio::sync::OnceCell::new(),
                    added: AtomicU64::new(0),
                });
                open.insert(dir.to_owned(), Arc::downgrade(&usage));
                usage
            }
        };
        WorkspaceQuota {
            usage,
            refused: Arc::default(),
        }
    }
}

/// Bytes of the regular files under `dir`; symbolic links are not followed (and cost nothing).
fn directory_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// The length of the file behind `fd`, if it is a file.
fn file_len(state: &mut CallState, fd: &Resource<Descriptor>) -> Result<Option<u64>> {
    Ok(match state.filesystem().table.get(fd)? {
        Descriptor::File(f) => Some(f.file.metadata()?.len()),
        Descriptor::Dir(_) => None,
    })
}

fn fs_result<T>(result: Result<T, FsError>) -> Result<(Result<T, ErrorCode>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// Measures the workspace of the call (if it has a quota) before a write; `None` when the
/// call has no quota to keep.
async fn measured_quota(store: &mut StoreContextMut<'_, CallState>) -> Option<WorkspaceQuota> {
    let quota = store.data().workspace_quota.clone()?;
    // Host work, not the plugin's computation.
    let clock = store.data().clock.clone();
    let _host = clock.enter_host();
    quota.usage.measure().await;
    Some(quota)
}

/// Defines the quota-keeping versions of the file-growing imports over wasmtime-wasi's.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, CallState>,
         (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                if let Some(quota) = measured_quota(&mut store).await
                    && let Some(len) = file_len(store.data_mut(), &fd)?
                {
                    let end = offset.saturating_add(buf.len() as u64);
                    if !quota.reserve(end.saturating_sub(len), &store.data().log) {
                        return Ok((Err(ErrorCode::InsufficientSpace),));
                    }
                }
                let mut view = store.data_mut().filesystem();
                fs_result(HostDescriptor::write(&mut view, fd, buf, offset).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: StoreContextMut<'_, CallState>, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                if let Some(quota) = measured_quota(&mut store).await
                    && let Some(len) = file_len(store.data_mut(), &fd)?
                    && !quota.reserve(size.saturating_sub(len), &store.data().log)
                {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut view = store.data_mut().filesystem();
                fs_result(HostDescriptor::set_size(&mut view, fd, size).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, CallState>, (fd, offset): (Resource<Descriptor>, u64)| {
            Box::new(async move { stream(&mut store, fd, Some(offset)).await })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, CallState>, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move { stream(&mut store, fd, None).await })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// An output stream on a file of a workspace with a quota: wasmtime-wasi's, wrapped so that
/// every write reserves what it adds past the file's end first.
async fn stream(
    store: &mut StoreContextMut<'_, CallState>,
    fd: Resource<Descriptor>,
    offset: Option<u64>,
) -> Result<(Result<Resource<DynOutputStream>, ErrorCode>,)> {
    let quota = measured_quota(store).await;
    let len = match &quota {
        Some(_) => file_len(store.data_mut(), &fd)?,
        None => None,
    };
    let log = store.data().log.clone();
    let mut view = store.data_mut().filesystem();
    let opened = match offset {
        Some(offset) => HostDescriptor::write_via_stream(&mut view, fd, offset),
        None => HostDescriptor::append_via_stream(&mut view, fd),
    };
    let resource = match opened {
        Ok(resource) => resource,
        Err(e) => return Ok((Err(e.downcast()?),)),
    };
    let (Some(quota), Some(len)) = (quota, len) else {
        return Ok((Ok(resource),));
    };
    let inner: DynOutputStream = view.table.delete(resource)?;
    let wrapped: DynOutputStream = Box::new(QuotaStream {
        inner,
        quota,
        log,
        // Appending writes at the end, which is where the file ends now.
        position: offset.unwrap_or(len),
        end: len,
    });
    Ok((Ok(view.table.push(wrapped)?),))
}

struct QuotaStream {
    inner: DynOutputStream,
    quota: WorkspaceQuota,
    log: LogSink,
    /// Where the next write lands.
    position: u64,
    /// The file's end as far as this stream knows (its length at creation, then its writes).
    end: u64,
}

impl QuotaStream {
    fn reserve(&mut self, len: usize) -> Result<(), StreamError> {
        let next = self.position.saturating_add(len as u64);
        if !self.quota.reserve(next.saturating_sub(self.end), &self.log) {
            return Err(StreamError::LastOperationFailed(
                std::io::Error::from_raw_os_error(ENOSPC).into(),
            ));
        }
        self.position = next;
        self.end = self.end.max(next);
        Ok(())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.reserve(bytes.len())?;
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.reserve(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

impl super::PluginRuntime {
    /// The workspace directory of a chat session (created if needed). Workspaces always live
    /// under the data directory: a user can never point one at an arbitrary host path.
    pub fn session_workspace(&self, session_id: &str) -> anyhow::Result<PathBuf> {
        let dir = self.session_workspace_path(session_id)?;
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Where a session's workspace is, without creating it (listing sessions must not touch
    /// the file system once per row).
    pub fn session_workspace_path(&self, session_id: &str) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            !session_id.is_empty()
                && session_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "invalid session id for a workspace"
        );
        Ok(self.workspaces.join("sessions").join(session_id))
    }

    /// The workspace of a user's direct tool calls (outside any session), created if needed:
    /// one per user, so one user's files are never another's.
    pub fn user_workspace(&self, user_id: &str) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            !user_id.is_empty()
                && user_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "invalid user id for a workspace"
        );
        let dir = self.workspaces.join("users").join(user_id);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Writes a file the host fetched for a session (a chat attachment) into its workspace at
    /// `name` (one path component), within the workspace quota shared with the session's tool
    /// calls. Returns the path, relative to the workspace.
    pub async fn save_to_session_workspace(
        &self,
        session_id: &str,
        dir: &str,
        name: &str,
        bytes: &[u8],
    ) -> anyhow::Result<String> {
        anyhow::ensure!(
            !name.is_empty() && !name.contains(['/', '\\', '\0']) && name != "." && name != "..",
            "`{name}` is not a file name"
        );
        let root = self.session_workspace(session_id)?;
        let quota = self
            .workspace_quotas
            .quota(&root, self.settings.workspace_quota_bytes);
        quota.usage.measure().await;
        let target_dir = root.join(dir);
        let target = target_dir.join(name);
        let replaced = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        if !quota
            .usage
            .reserve((bytes.len() as u64).saturating_sub(replaced))
        {
            anyhow::bail!(
                "the session's workspace would pass its quota of {} bytes",
                self.settings.workspace_quota_bytes
            );
        }
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::create_dir_all(&target_dir)?;
            // Not through a link a tool call may have left at that name.
            if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.is_file()) {
                anyhow::bail!("`{}` exists and is not a file", target.display());
            }
            let _ = std::fs::remove_file(&target);
            std::fs::write(&target, bytes)?;
            Ok(())
        })
        .await??;
        Ok(format!("{dir}/{name}"))
    }

    /// Creates a workspace directory for callers that have none (CLI calls).
    pub fn default_workspace(&self) -> anyhow::Result<PathBuf> {
        let dir = self.workspaces.join("default");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}
