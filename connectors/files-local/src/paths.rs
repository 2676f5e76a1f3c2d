//! Safe paths under the data directory.
//!
//! A path in a command is parsed once into a [`RelativePath`]: `/`-separated segments, each 1 to
//! 255 bytes, no `.` or `..`, no leading `/`, no backslash, no NUL or other control character,
//! no invisible formatting character (bidirectional overrides, zero-width characters), nothing
//! that starts with the connector's temp-file prefix. Names must also be portable on every
//! platform, so that the store can move to Windows or Nextcloud as it is (and a drive-relative
//! name such as `C:evil.txt` never escapes there): none of `<>:"|?*`, no reserved device name
//! (`CON`, `PRN`, `AUX`, `NUL`, `COM1`–`COM9`, `LPT1`–`LPT9`, with or without an extension), no
//! trailing dot or space. [`Root`] then resolves it inside
//! the data directory, segment by segment, without following a symbolic link out of it: a link
//! is allowed only when its canonical target is inside the root, and the directory a file goes
//! into is canonicalized and checked again before anything is written.
//!
//! (The checks guard against what arrives in messages; another local user racing to swap
//! directories for links between the check and the write is outside what they defend against.)

use crm_domain::comms::is_invisible_format;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The longest segment (a file or folder name), in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// The longest relative path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Names starting with this are the connector's temporary files, never a stored file.
pub const TEMP_PREFIX: &str = ".crm-tmp-";

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `""`.
    #[error("the path is empty")]
    Empty,
    /// Starts with `/`.
    #[error("the path must be relative (no leading '/')")]
    Absolute,
    /// Contains `\`.
    #[error("the path contains a backslash; use '/' to separate folders")]
    Backslash,
    /// Contains NUL or another control character.
    #[error("the path contains a control character")]
    ControlCharacter,
    /// `a//b` or a trailing `/`.
    #[error("the path has an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("the path contains a '.' or '..' segment")]
    DotSegment,
    /// A segment over [`MAX_NAME_BYTES`].
    #[error("a name in the path is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    /// The path over [`MAX_PATH_BYTES`].
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    PathTooLong,
    /// A name reserved for the connector's temporary files.
    #[error("names starting with '{TEMP_PREFIX}' are reserved")]
    Reserved,
    /// An invisible formatting character (bidirectional override, zero-width character...).
    #[error("the path contains an invisible formatting character (U+{0:04X})")]
    InvisibleCharacter(u32),
    /// A character Windows refuses in names.
    #[error("the path contains '{0}', which is not allowed in file names on every platform (none of <>:\"|?*)")]
    NotPortable(char),
    /// A Windows device name (`CON`, `NUL`, `COM1`...), with or without an extension.
    #[error("'{0}' is a reserved device name on Windows")]
    DeviceName(String),
    /// A name ending in `.` or a space.
    #[error("a name in the path ends with a dot or a space")]
    TrailingDotOrSpace,
    /// A symbolic link leads out of the data directory (or nowhere).
    #[error("'{0}' is a symbolic link that leads outside the data directory")]
    Escapes(String),
    /// Something other than a folder where a folder is needed.
    #[error("'{0}' exists and is not a folder")]
    NotAFolder(String),
}

/// A checked relative path: one or more safe segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativePath {
    segments: Vec<String>,
}

impl RelativePath {
    /// Parses and checks `path`.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::PathTooLong);
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute);
        }
        if path.contains('\\') {
            return Err(PathError::Backslash);
        }
        if path.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
        if let Some(c) = path.chars().find(|&c| is_invisible_format(c)) {
            return Err(PathError::InvisibleCharacter(u32::from(c)));
        }
        if let Some(c) = path.chars().find(|c| NOT_PORTABLE.contains(c)) {
            return Err(PathError::NotPortable(c));
        }
        let mut segments = Vec::new();
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err(PathError::EmptySegment);
            }
            if segment == "." || segment == ".." {
                return Err(PathError::DotSegment);
            }
            if segment.len() > MAX_NAME_BYTES {
                return Err(PathError::NameTooLong);
            }
            if segment.starts_with(TEMP_PREFIX) {
                return Err(PathError::Reserved);
            }
            if segment.ends_with(['.', ' ']) {
                return Err(PathError::TrailingDotOrSpace);
            }
            if is_device_name(segment) {
                return Err(PathError::DeviceName(segment.to_owned()));
            }
            segments.push(segment.to_owned());
        }
        Ok(RelativePath { segments })
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The folders it is in.
    pub fn parent(&self) -> &[String] {
        &self.segments[..self.segments.len() - 1]
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.segments.last().expect("a relative path has a segment")
    }

    /// The path, `/`-separated.
    pub fn as_string(&self) -> String {
        self.segments.join("/")
    }
}

/// Characters Windows refuses in names (besides `/`, `\\` and control characters).
const NOT_PORTABLE: &[char] = &['<', '>', ':', '"', '|', '?', '*'];

/// Whether `name` is a Windows device name: `CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`,
/// `LPT0`–`LPT9` (digits ¹²³ too), in any case, alone or before an extension or spaces.
fn is_device_name(name: &str) -> bool {
    let base = name.split('.').next().unwrap_or(name).trim_end_matches(' ').to_ascii_uppercase();
    match base.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" => true,
        _ => {
            let mut chars = base.chars();
            let head: String = chars.by_ref().take(3).collect();
            let rest: Vec<char> = chars.collect();
            (head == "COM" || head == "LPT") && matches!(rest.as_slice(), [d] if d.is_ascii_digit() || matches!(d, '¹' | '²' | '³'))
        }
    }
}

/// What is at a path inside a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Nothing.
    Absent,
    /// A regular file (reached through a symbolic link inside the root when `linked`).
    File {
        /// Where its bytes are.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Reached through a symbolic link.
        linked: bool,
    },
    /// A folder.
    Folder,
    /// A device, socket or the like.
    Other,
}

/// The data directory, canonical.
/// Folders the connector makes are its user's alone (0700): customers' files are not for the
/// machine's other users.
fn private_dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// Opens `dir`, creating it when missing (readable by this user only).
    pub fn open(dir: &Path) -> io::Result<Root> {
        private_dir_builder().recursive(true).create(dir)?;
        let path = fs::canonicalize(dir)?;
        if !path.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, format!("{} is not a directory", path.display())));
        }
        Ok(Root { path })
    }

    /// The canonical data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` (canonical) is the root or inside it.
    pub fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.path)
    }

    /// The canonical folder `segments` names, creating missing folders when `create`; `None`
    /// when a folder is missing and `create` is false. Never leaves the root.
    pub fn folder(&self, segments: &[String], create: bool) -> Result<Option<PathBuf>, FolderError> {
        let mut current = self.path.clone();
        let mut shown = String::new();
        for segment in segments {
            if !shown.is_empty() {
                shown.push('/');
            }
            shown.push_str(segment);
            let next = current.join(segment);
            let metadata = match fs::symlink_metadata(&next) {
                Ok(metadata) => metadata,
                Err(err) if err.kind() == io::ErrorKind::NotFound && create => {
                    match private_dir_builder().create(&next) {
                        Ok(()) => sync_folder(&current)?,
                        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(err) => return Err(err.into()),
                    }
                    fs::symlink_metadata(&next)?
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(err.into()),
            };
            current = if metadata.file_type().is_symlink() {
                let target = self.inside(&next, &shown)?;
                if !target.is_dir() {
                    return Err(PathError::NotAFolder(shown).into());
                }
                target
            } else if metadata.is_dir() {
                next
            } else {
                return Err(PathError::NotAFolder(shown).into());
            };
        }
        let canonical = fs::canonicalize(&current)?;
        if !self.contains(&canonical) {
            return Err(PathError::Escapes(shown).into());
        }
        Ok(Some(canonical))
    }

    /// What `name` is inside the canonical `folder` (from [`Root::folder`]); a symbolic link is
    /// followed only when its target is inside the root. `shown` names it in errors.
    pub fn entry(&self, folder: &Path, name: &str, shown: &str) -> Result<Entry, FolderError> {
        let path = folder.join(name);
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Entry::Absent),
            Err(err) => return Err(err.into()),
        };
        if metadata.file_type().is_symlink() {
            let target = self.inside(&path, shown)?;
            let metadata = fs::metadata(&target)?;
            return Ok(if metadata.is_file() {
                Entry::File { path: target, size: metadata.len(), linked: true }
            } else if metadata.is_dir() {
                Entry::Folder
            } else {
                Entry::Other
            });
        }
        Ok(if metadata.is_file() {
            Entry::File { path, size: metadata.len(), linked: false }
        } else if metadata.is_dir() {
            Entry::Folder
        } else {
            Entry::Other
        })
    }

    /// The canonical target of the link at `link`, if inside the root.
    fn inside(&self, link: &Path, shown: &str) -> Result<PathBuf, FolderError> {
        match fs::canonicalize(link) {
            Ok(target) if self.contains(&target) => Ok(target),
            Ok(_) => Err(PathError::Escapes(shown.to_owned()).into()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(PathError::Escapes(shown.to_owned()).into()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Makes a folder's entries (a new file or folder name) durable.
pub fn sync_folder(folder: &Path) -> io::Result<()> {
    fs::File::open(folder)?.sync_all()
}

/// Resolving a folder failed: the path is refused, or the file system failed.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// Refused for good.
    #[error(transparent)]
    Refused(#[from] PathError),
    /// An I/O error (may work later).
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_are_accepted() {
        for path in [
            "a",
            "customers/42/invoice.pdf",
            "Πελάτες/Γιώργος/σχέδιο.dxf",
            "a b/c-d_e.f",
            ".hidden",
            "a..b/c..d",
            "CONSOLE.txt",
            "com10",
            "nul_x",
            "می\u{200C}خواهم.pdf",
            "👨\u{200D}👩\u{200D}👧.jpg",
        ] {
            let parsed = RelativePath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(parsed.as_string(), path);
        }
        let parsed = RelativePath::parse("x/y/z.txt").unwrap();
        assert_eq!(parsed.parent(), ["x", "y"]);
        assert_eq!(parsed.name(), "z.txt");
    }

    #[test]
    fn traversal_and_odd_names_are_refused() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("..", PathError::DotSegment),
            ("../x", PathError::DotSegment),
            ("a/../../x", PathError::DotSegment),
            ("a/./b", PathError::DotSegment),
            ("a/..", PathError::DotSegment),
            ("a\\..\\b", PathError::Backslash),
            ("C:\\x", PathError::Backslash),
            ("a//b", PathError::EmptySegment),
            ("a/", PathError::EmptySegment),
            ("a\0b", PathError::ControlCharacter),
            ("a\nb", PathError::ControlCharacter),
            ("tab\there", PathError::ControlCharacter),
            ("del\u{7f}", PathError::ControlCharacter),
            ("c1\u{85}", PathError::ControlCharacter),
            (".crm-tmp-123", PathError::Reserved),
            ("a/.crm-tmp-x/b", PathError::Reserved),
            ("invoice\u{202E}fdp.exe", PathError::InvisibleCharacter(0x202E)),
            ("a/\u{200B}b", PathError::InvisibleCharacter(0x200B)),
            ("\u{FEFF}a", PathError::InvisibleCharacter(0xFEFF)),
            ("soft\u{00AD}hyphen", PathError::InvisibleCharacter(0xAD)),
            ("x\u{2067}y", PathError::InvisibleCharacter(0x2067)),
            ("x\u{061C}y", PathError::InvisibleCharacter(0x61C)),
            ("C:evil.txt", PathError::NotPortable(':')),
            ("a/b:stream", PathError::NotPortable(':')),
            ("a<b", PathError::NotPortable('<')),
            ("a>b", PathError::NotPortable('>')),
            ("a\"b", PathError::NotPortable('"')),
            ("a|b", PathError::NotPortable('|')),
            ("what?", PathError::NotPortable('?')),
            ("*.txt", PathError::NotPortable('*')),
            ("...", PathError::TrailingDotOrSpace),
            ("a./b", PathError::TrailingDotOrSpace),
            ("a/b.", PathError::TrailingDotOrSpace),
            ("a/b ", PathError::TrailingDotOrSpace),
            ("CON", PathError::DeviceName("CON".into())),
            ("a/con.txt", PathError::DeviceName("con.txt".into())),
            ("Nul.tar.gz", PathError::DeviceName("Nul.tar.gz".into())),
            ("aux .pdf", PathError::DeviceName("aux .pdf".into())),
            ("prn/x", PathError::DeviceName("prn".into())),
            ("COM1", PathError::DeviceName("COM1".into())),
            ("lpt9.log", PathError::DeviceName("lpt9.log".into())),
            ("COM¹", PathError::DeviceName("COM¹".into())),
        ];
        for (path, expected) in cases {
            assert_eq!(RelativePath::parse(path).as_ref(), Err(expected), "{path:?}");
        }
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(RelativePath::parse(&long), Err(PathError::NameTooLong));
        assert!(RelativePath::parse(&"n".repeat(MAX_NAME_BYTES)).is_ok());
        // 128 two-byte letters = 256 bytes: the limit is in bytes, not characters.
        assert_eq!(RelativePath::parse(&"λ".repeat(128)), Err(PathError::NameTooLong));
        let deep = vec!["abcdefgh"; 120].join("/");
        assert_eq!(RelativePath::parse(&deep), Err(PathError::PathTooLong));
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_may_not_lead_out() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        fs::create_dir(root.path().join("inside")).unwrap();
        fs::write(outside.path().join("secret"), b"x").unwrap();
        symlink(outside.path(), root.path().join("out")).unwrap();
        symlink(root.path().join("inside"), root.path().join("alias")).unwrap();
        symlink(outside.path().join("secret"), root.path().join("inside/leak")).unwrap();
        symlink(root.path().join("nowhere"), root.path().join("dangling")).unwrap();
        let seg = |p: &str| RelativePath::parse(p).unwrap();

        let err = root.folder(seg("out/x").segments(), true).unwrap_err();
        assert!(matches!(err, FolderError::Refused(PathError::Escapes(ref s)) if s == "out"), "{err:?}");
        assert!(!outside.path().join("x").exists(), "nothing created outside");
        let err = root.folder(seg("dangling/x").segments(), true).unwrap_err();
        assert!(matches!(err, FolderError::Refused(PathError::Escapes(_))), "{err:?}");

        // A link that stays inside is followed.
        let folder = root.folder(seg("alias/sub").segments(), true).unwrap().unwrap();
        assert_eq!(folder, root.path().join("inside/sub"));

        let inside = root.folder(seg("inside").segments(), false).unwrap().unwrap();
        let err = root.entry(&inside, "leak", "inside/leak").unwrap_err();
        assert!(matches!(err, FolderError::Refused(PathError::Escapes(_))), "{err:?}");

        // A file where a folder is needed.
        fs::write(root.path().join("inside/file"), b"x").unwrap();
        let err = root.folder(seg("inside/file/x").segments(), true).unwrap_err();
        assert!(matches!(err, FolderError::Refused(PathError::NotAFolder(ref s)) if s == "inside/file"), "{err:?}");

        // Missing folders are not created when not asked.
        assert!(root.folder(seg("missing/x").segments(), false).unwrap().is_none());
        assert!(!root.path().join("missing").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_data_directory_reached_through_a_link_works() {
        use std::os::unix::fs::symlink;
        let real = tempfile::tempdir().unwrap();
        let links = tempfile::tempdir().unwrap();
        symlink(real.path(), links.path().join("data")).unwrap();
        let root = Root::open(&links.path().join("data")).unwrap();
        let folder = root.folder(&["a".to_owned()], true).unwrap().unwrap();
        assert!(folder.starts_with(fs::canonicalize(real.path()).unwrap()));
    }
}
