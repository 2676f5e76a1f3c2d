//! The file operations, blocking (run them on the blocking pool): ensure a folder, store a file
//! atomically and without silent overwrites, read a file.
//!
//! A file is written to a temporary file in its folder, flushed to disk, then put in place in
//! one step, so a reader never sees half a file: without `overwrite` with a hard link, which
//! fails if something appeared at the path meanwhile (no lost update between two writers), or,
//! on a file system without hard links, with a rename that refuses to replace (`renameat2`
//! `RENAME_NOREPLACE`; where there is none either, the file is refused rather than risk
//! replacing one); with `overwrite` by renaming over the old file. The folder is flushed afterwards so the new name
//! survives a crash.

use crate::paths::{Entry, FolderError, PathError, RelativePath, Root, TEMP_PREFIX, sync_folder};
use crm_domain::sha256_hex;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, lower-case hex.
    pub sha256: String,
}

/// Why an operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Refused for good: the result is "failed" with this reason.
    #[error("{0}")]
    Refused(String),
    /// The file system failed; may work later.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<FolderError> for FileError {
    fn from(err: FolderError) -> Self {
        match err {
            FolderError::Refused(err) => FileError::Refused(err.to_string()),
            FolderError::Io(err) => FileError::Io(err),
        }
    }
}

impl From<PathError> for FileError {
    fn from(err: PathError) -> Self {
        FileError::Refused(err.to_string())
    }
}

/// Whether an I/O error of this kind is one retrying cannot fix: the file system refuses the
/// operation itself (permissions, a read-only mount, a name it does not take, a file where a
/// folder is needed, a size it cannot hold...). Anything else (disk full, over quota,
/// interrupted, timed out, busy, or unknown) may pass and is retried.
pub fn is_permanent(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        PermissionDenied
            | ReadOnlyFilesystem
            | InvalidFilename
            | InvalidInput
            | NotADirectory
            | IsADirectory
            | DirectoryNotEmpty
            | FileTooLarge
            | TooManyLinks
            | CrossesDevices
            | NotSeekable
            | Unsupported
            | ArgumentListTooLong
    )
}

/// Makes sure folder `path` exists.
pub fn ensure_folder(root: &Root, path: &RelativePath) -> Result<(), FileError> {
    root.folder(path.segments(), true)?;
    Ok(())
}

/// Stores `content` at `path`. The same bytes already there are a success (a redelivered
/// command); different bytes are refused unless `overwrite`.
pub fn store(root: &Root, path: &RelativePath, content: &[u8], overwrite: bool) -> Result<Stored, FileError> {
    store_with(root, path, content, overwrite, |temp, target| fs::hard_link(temp, target))
}

/// [`store`], placing a new file with `link` (a hard link, replaced in tests).
fn store_with(
    root: &Root,
    path: &RelativePath,
    content: &[u8],
    overwrite: bool,
    link: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> Result<Stored, FileError> {
    let shown = path.as_string();
    let folder = root.folder(path.parent(), true)?.expect("created when missing");
    let stored = Stored { size: content.len() as u64, sha256: sha256_hex(content) };
    match root.entry(&folder, path.name(), &shown)? {
        Entry::Absent => {}
        Entry::File { path: existing, size, linked } => {
            if size == stored.size && same_content(&existing, content)? {
                return Ok(stored);
            }
            if !overwrite {
                return Err(FileError::Refused(format!("'{shown}' exists with different content (set overwrite to replace it)")));
            }
            if linked {
                return Err(FileError::Refused(format!("'{shown}' is a symbolic link; it is not replaced")));
            }
        }
        Entry::Folder => return Err(FileError::Refused(format!("'{shown}' is a folder"))),
        Entry::Other => return Err(FileError::Refused(format!("'{shown}' is not a regular file"))),
    }

    let target = folder.join(path.name());
    let temp = folder.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let result = write_temp(&temp, content).and_then(|()| {
        if overwrite {
            return fs::rename(&temp, &target).map(|()| Placed::Yes);
        }
        place_new(&temp, &target, link, rename_no_replace)
    });
    let _ = fs::remove_file(&temp);
    match result {
        Ok(Placed::Yes) => {
            sync_folder(&folder)?;
            Ok(stored)
        }
        // Something appeared at the path since it was checked: compare with that.
        Ok(Placed::Raced) => match root.entry(&folder, path.name(), &shown)? {
            Entry::File { path: existing, size, .. } if size == stored.size && same_content(&existing, content)? => Ok(stored),
            _ => Err(FileError::Refused(format!("'{shown}' exists with different content (set overwrite to replace it)"))),
        },
        Ok(Placed::Cannot { link, rename }) => Err(FileError::Refused(format!(
            "'{shown}' cannot be stored without risking replacing a file written meanwhile: the file system has neither hard \
             links ({link}) nor renaming without replacing ({rename}); set overwrite to replace"
        ))),
        Err(err) => Err(err.into()),
    }
}

/// How placing a new file went.
#[derive(Debug)]
enum Placed {
    /// It is in place.
    Yes,
    /// Something appeared at the path meanwhile; nothing was replaced.
    Raced,
    /// The file system offers no way to place it without possibly replacing another.
    Cannot { link: io::Error, rename: io::Error },
}

/// Puts `temp` at `target` without ever replacing what is there: `link` (a hard link), or where
/// that fails for another reason than something being there, `rename` (which must refuse to
/// replace). Never falls back to a plain rename.
fn place_new(
    temp: &Path,
    target: &Path,
    link: impl FnOnce(&Path, &Path) -> io::Result<()>,
    rename: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<Placed> {
    let link_error = match link(temp, target) {
        Ok(()) => return Ok(Placed::Yes),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(Placed::Raced),
        Err(err) => err,
    };
    tracing::debug!(error = %link_error, "hard link failed; renaming without replacing instead");
    match rename(temp, target) {
        Ok(()) => Ok(Placed::Yes),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(Placed::Raced),
        // No such rename here, or not on this file system.
        Err(err) if matches!(err.kind(), io::ErrorKind::Unsupported | io::ErrorKind::InvalidInput) => {
            Ok(Placed::Cannot { link: link_error, rename: err })
        }
        Err(err) => Err(err),
    }
}

/// Renames `from` to `to` unless something is at `to` (`AlreadyExists` then).
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(io::Error::from)
}

/// Renames `from` to `to` unless something is at `to`: not available on this platform.
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn rename_no_replace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no rename without replacing on this platform"))
}

/// Writes a new file, readable and writable by this user only (0600), and syncs it.
fn write_temp(temp: &Path, content: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(temp)?;
    file.write_all(content)?;
    file.sync_all()
}

/// Whether the file at `path` holds exactly `content`.
fn same_content(path: &Path, content: &[u8]) -> io::Result<bool> {
    let mut file = fs::File::open(path)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut offset = 0usize;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(offset == content.len());
        }
        if offset + n > content.len() || buffer[..n] != content[offset..offset + n] {
            return Ok(false);
        }
        offset += n;
    }
}

/// What [`remove_stale_temps`] did.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Temporary files removed.
    pub removed: usize,
    /// What could not be looked at or removed (path: error); the rest was cleaned regardless.
    pub errors: Vec<String>,
}

/// Removes the connector's temporary files older than `age` anywhere under the root (left by a
/// crash between writing and placing a file); younger ones may belong to a write in progress.
/// A folder or file that fails is noted and passed over, so one bad entry never keeps the
/// others.
pub fn remove_stale_temps(root: &Root, age: std::time::Duration) -> Cleanup {
    remove_stale_temps_with(root, age, |path| fs::remove_file(path))
}

fn remove_stale_temps_with(root: &Root, age: std::time::Duration, remove: impl Fn(&Path) -> io::Result<()>) -> Cleanup {
    let now = std::time::SystemTime::now();
    let mut cleanup = Cleanup::default();
    let mut folders = vec![root.path().to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(err) => {
                cleanup.errors.push(format!("{}: {err}", folder.display()));
                continue;
            }
        };
        for entry in entries {
            let visited = entry.and_then(|entry| {
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    folders.push(entry.path());
                } else if kind.is_file() && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let modified = entry.metadata()?.modified()?;
                    if now.duration_since(modified).is_ok_and(|elapsed| elapsed >= age) {
                        remove(&entry.path()).map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", entry.path().display())))?;
                        cleanup.removed += 1;
                    }
                }
                Ok(())
            });
            if let Err(err) = visited {
                cleanup.errors.push(err.to_string());
            }
        }
    }
    cleanup
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The bytes.
    Found(Vec<u8>),
    /// Nothing there.
    NotFound,
}

/// Reads the file at `path`, refusing one over `max_bytes`.
pub fn read(root: &Root, path: &RelativePath, max_bytes: u64) -> Result<ReadOutcome, FileError> {
    let shown = path.as_string();
    let Some(folder) = root.folder(path.parent(), false)? else { return Ok(ReadOutcome::NotFound) };
    match root.entry(&folder, path.name(), &shown)? {
        Entry::Absent => Ok(ReadOutcome::NotFound),
        Entry::File { size, .. } if size > max_bytes => {
            Err(FileError::Refused(format!("'{shown}' is {size} bytes, over the {max_bytes}-byte cap for files in messages")))
        }
        Entry::File { path: file, .. } => match fs::read(&file) {
            Ok(bytes) => Ok(ReadOutcome::Found(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(ReadOutcome::NotFound),
            Err(err) => Err(err.into()),
        },
        Entry::Folder => Err(FileError::Refused(format!("'{shown}' is a folder"))),
        Entry::Other => Err(FileError::Refused(format!("'{shown}' is not a regular file"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        (dir, root)
    }

    fn path(p: &str) -> RelativePath {
        RelativePath::parse(p).unwrap()
    }

    #[test]
    fn store_is_idempotent_and_refuses_silent_overwrites() {
        let (_dir, root) = setup();
        let stored = store(&root, &path("a/b/c.txt"), b"hello", false).unwrap();
        assert_eq!(stored.size, 5);
        assert_eq!(stored.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(store(&root, &path("a/b/c.txt"), b"hello", false).unwrap(), stored);
        let err = store(&root, &path("a/b/c.txt"), b"hellO", false).unwrap_err();
        assert!(matches!(&err, FileError::Refused(r) if r.contains("exists with different content")), "{err}");
        assert_eq!(fs::read(root.path().join("a/b/c.txt")).unwrap(), b"hello");
        let replaced = store(&root, &path("a/b/c.txt"), b"bye", true).unwrap();
        assert_eq!(replaced.size, 3);
        assert_eq!(fs::read(root.path().join("a/b/c.txt")).unwrap(), b"bye");
        // A prefix of what is there is different content too.
        assert!(store(&root, &path("a/b/c.txt"), b"by", false).is_err());
        assert!(store(&root, &path("a/b/c.txt"), b"bye!", false).is_err());
        let leftovers: Vec<_> = fs::read_dir(root.path().join("a/b")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["c.txt"], "no temporary files left behind");
    }

    /// Customers' files and their folders are this user's alone.
    #[cfg(unix)]
    #[test]
    fn files_and_folders_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_dir, root) = setup();
        store(&root, &path("customers/c1/media/a.jpg"), b"jpeg", false).unwrap();
        let mode = |p: &str| fs::metadata(root.path().join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("customers/c1/media/a.jpg"), 0o600);
        for folder in ["customers", "customers/c1", "customers/c1/media"] {
            assert_eq!(mode(folder), 0o700, "{folder}");
        }
        let fresh = tempfile::tempdir().unwrap();
        let data = fresh.path().join("data/files");
        Root::open(&data).unwrap();
        assert_eq!(fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn folders_and_files_do_not_mix() {
        let (_dir, root) = setup();
        ensure_folder(&root, &path("x/y")).unwrap();
        ensure_folder(&root, &path("x/y")).unwrap();
        assert!(root.path().join("x/y").is_dir());
        let err = store(&root, &path("x/y"), b"data", true).unwrap_err();
        assert!(matches!(&err, FileError::Refused(r) if r.contains("is a folder")), "{err}");
        store(&root, &path("x/f"), b"data", false).unwrap();
        let err = ensure_folder(&root, &path("x/f")).unwrap_err();
        assert!(matches!(&err, FileError::Refused(r) if r.contains("not a folder")), "{err}");
        let err = store(&root, &path("x/f/g"), b"data", false).unwrap_err();
        assert!(matches!(&err, FileError::Refused(_)), "{err}");
    }

    #[test]
    fn read_returns_the_bytes_or_not_found() {
        let (_dir, root) = setup();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        store(&root, &path("bin/all.bytes"), &bytes, false).unwrap();
        assert_eq!(read(&root, &path("bin/all.bytes"), 1 << 20).unwrap(), ReadOutcome::Found(bytes));
        assert_eq!(read(&root, &path("bin/none"), 1 << 20).unwrap(), ReadOutcome::NotFound);
        assert_eq!(read(&root, &path("nofolder/none"), 1 << 20).unwrap(), ReadOutcome::NotFound);
        assert!(!root.path().join("nofolder").exists(), "a read creates nothing");
        let err = read(&root, &path("bin/all.bytes"), 1000).unwrap_err();
        assert!(matches!(&err, FileError::Refused(r) if r.contains("over the 1000-byte cap")), "{err}");
        let err = read(&root, &path("bin"), 1000).unwrap_err();
        assert!(matches!(&err, FileError::Refused(r) if r.contains("is a folder")), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn links_inside_are_read_but_never_replaced() {
        use std::os::unix::fs::symlink;
        let (_dir, root) = setup();
        store(&root, &path("real.txt"), b"real", false).unwrap();
        symlink(root.path().join("real.txt"), root.path().join("link.txt")).unwrap();
        assert_eq!(read(&root, &path("link.txt"), 100).unwrap(), ReadOutcome::Found(b"real".to_vec()));
        assert!(store(&root, &path("link.txt"), b"real", false).is_ok(), "same bytes: nothing to do");
        let err = store(&root, &path("link.txt"), b"other", true).unwrap_err();
        assert!(matches!(&err, FileError::Refused(r) if r.contains("symbolic link")), "{err}");
        assert_eq!(fs::read(root.path().join("real.txt")).unwrap(), b"real");
    }

    #[test]
    fn stale_temporary_files_are_removed() {
        let (_dir, root) = setup();
        store(&root, &path("a/b/keep.txt"), b"x", false).unwrap();
        fs::write(root.path().join("a/b/.crm-tmp-1"), b"half").unwrap();
        fs::write(root.path().join("a/.crm-tmp-2"), b"half").unwrap();
        let young = remove_stale_temps(&root, std::time::Duration::from_secs(3600));
        assert_eq!((young.removed, young.errors.len()), (0, 0), "young ones stay");
        let stale = remove_stale_temps(&root, std::time::Duration::ZERO);
        assert_eq!((stale.removed, stale.errors.len()), (2, 0));
        assert!(root.path().join("a/b/keep.txt").exists());
        assert!(!root.path().join("a/b/.crm-tmp-1").exists());
    }

    #[test]
    fn one_temporary_file_that_cannot_be_removed_keeps_no_other() {
        let (_dir, root) = setup();
        for name in ["a/.crm-tmp-1", "a/.crm-tmp-2", "b/.crm-tmp-3", ".crm-tmp-4"] {
            fs::create_dir_all(root.path().join(name).parent().unwrap()).unwrap();
            fs::write(root.path().join(name), b"half").unwrap();
        }
        let stuck = root.path().join("a/.crm-tmp-1");
        let cleanup = remove_stale_temps_with(&root, std::time::Duration::ZERO, |path| {
            if path == stuck { Err(io::Error::new(io::ErrorKind::PermissionDenied, "stuck")) } else { fs::remove_file(path) }
        });
        assert_eq!(cleanup.removed, 3);
        assert_eq!(cleanup.errors.len(), 1, "{:?}", cleanup.errors);
        assert!(cleanup.errors[0].contains(".crm-tmp-1") && cleanup.errors[0].contains("stuck"), "{:?}", cleanup.errors);
        let left: Vec<bool> =
            ["a/.crm-tmp-1", "a/.crm-tmp-2", "b/.crm-tmp-3", ".crm-tmp-4"].iter().map(|n| root.path().join(n).exists()).collect();
        assert_eq!(left, [true, false, false, false]);
    }

    fn no_hard_links(_: &Path, _: &Path) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "no hard links here"))
    }

    #[test]
    fn without_hard_links_a_file_written_meanwhile_is_never_replaced() {
        let (_dir, root) = setup();
        // Another instance writes the file between the check and the placing.
        let target = root.path().join("a/race.txt");
        let other_writer = |_: &Path, _: &Path| -> io::Result<()> {
            fs::write(&target, b"theirs")?;
            Err(io::Error::new(io::ErrorKind::Unsupported, "no hard links here"))
        };
        fs::create_dir(root.path().join("a")).unwrap();
        let err = store_with(&root, &path("a/race.txt"), b"mine", false, other_writer).unwrap_err();
        assert!(matches!(&err, FileError::Refused(r) if r.contains("exists with different content")), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"theirs", "the other instance's file is kept");
        let names: Vec<_> = fs::read_dir(root.path().join("a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["race.txt"], "no temporary files left behind");

        // Nothing there: renamed into place without a hard link.
        let stored = store_with(&root, &path("a/new.txt"), b"mine", false, no_hard_links).unwrap();
        assert_eq!((stored.size, fs::read(root.path().join("a/new.txt")).unwrap()), (4, b"mine".to_vec()));
    }

    #[test]
    fn placing_never_replaces_without_overwrite() {
        let (_dir, root) = setup();
        let (temp, target) = (root.path().join("temp"), root.path().join("target"));
        let never = |_: &Path, _: &Path| -> io::Result<()> { panic!("renamed after the hard link was placed or raced") };
        let unsupported = |_: &Path, _: &Path| Err(io::Error::new(io::ErrorKind::InvalidInput, "flag not supported"));

        // A hard link: placed, or raced when something is there.
        fs::write(&temp, b"new").unwrap();
        assert!(matches!(place_new(&temp, &target, |a, b| fs::hard_link(a, b), never), Ok(Placed::Yes)));
        assert!(matches!(place_new(&temp, &target, |a, b| fs::hard_link(a, b), never), Ok(Placed::Raced)));
        fs::remove_file(&target).unwrap();

        // No hard links: a rename that refuses to replace.
        fs::write(&target, b"old").unwrap();
        assert!(matches!(place_new(&temp, &target, no_hard_links, rename_no_replace), Ok(Placed::Raced)));
        assert_eq!(fs::read(&target).unwrap(), b"old");
        fs::remove_file(&target).unwrap();
        assert!(matches!(place_new(&temp, &target, no_hard_links, rename_no_replace), Ok(Placed::Yes)));
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!temp.exists());

        // Neither: refused, nothing touched.
        fs::write(&temp, b"newer").unwrap();
        fs::remove_file(&target).unwrap();
        assert!(matches!(place_new(&temp, &target, no_hard_links, unsupported), Ok(Placed::Cannot { .. })));
        assert!(!target.exists());
    }

    #[test]
    fn permanent_io_errors_are_told_apart() {
        use io::ErrorKind::*;
        for kind in [PermissionDenied, ReadOnlyFilesystem, InvalidFilename, NotADirectory, IsADirectory, FileTooLarge] {
            assert!(is_permanent(kind), "{kind:?}");
        }
        for kind in [StorageFull, QuotaExceeded, Interrupted, TimedOut, WouldBlock, ResourceBusy, NotFound, Other, UnexpectedEof] {
            assert!(!is_permanent(kind), "{kind:?}");
        }
    }

    #[test]
    fn empty_files_are_files() {
        let (_dir, root) = setup();
        let stored = store(&root, &path("empty"), b"", false).unwrap();
        assert_eq!(stored.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(read(&root, &path("empty"), 0).unwrap(), ReadOutcome::Found(Vec::new()));
    }
}
