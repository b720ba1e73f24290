//! Packs a glTF scene into one self-contained blob for the guest.
//!
//! Why: the path tracer runs as WebAssembly in a sandbox with no file access
//! (ARCHITECTURE.md: the sandbox performs no I/O on the guest's behalf), and
//! the farm ships a job's scene to workers as bytes. A glTF scene often is
//! several files: a `.gltf` JSON document whose `buffers[].uri` and
//! `images[].uri` name `.bin` and texture files next to it. [`pack_scene`]
//! reads those on the coordinator and inlines them as `data:` URIs, so the
//! guest gets one document it can read from memory. [`pack_scene_bytes`]
//! does the same for a scene uploaded with its files (the API's `resource`
//! parts: a browser has no directory to read), looking references up among
//! the uploaded files instead of on disk.
//!
//! The scene's references are untrusted input (a scene may come from
//! anywhere), so a URI is inlined only if it is a relative path that stays
//! inside the scene file's directory:
//!
//! - `data:` URIs are kept as they are;
//! - URIs with a scheme (`http:`, `file:`, `C:` ...), absolute paths, empty
//!   URIs, queries or fragments (`?`, `#`) and backslashes are refused;
//! - the path is percent-decoded first (`my%20file.bin` is `my file.bin`,
//!   and `%2e%2e/x` is `../x`), then normalised lexically: a `..` that
//!   climbs out of the directory is refused;
//! - the result is resolved with `canonicalize` (following symlinks) and must
//!   still lie inside the canonical scene directory and be a regular file;
//! - the bytes read in total (scene file plus every referenced file) are
//!   bounded by `max_bytes` ([`DEFAULT_MAX_BYTES`] for [`pack_scene`]),
//!   checked from the file size before reading and enforced while reading.
//!   The packed result is larger by base64's 4/3.
//!
//! Buffers become `data:application/octet-stream;base64,...`; images use
//! their `mimeType` if present, else PNG or JPEG by their magic bytes, else
//! they are refused. Every other field of the document is kept as is
//! (`serde_json::Value`, so unknown fields and extensions survive; object
//! keys come out sorted). Only `buffers` and `images` are looked at:
//! extensions that reference files elsewhere are not packed.
//!
//! **GLB** (recognised by its `glTF` magic, not its extension) is returned
//! byte for byte when its JSON chunk references no external files (the
//! usual case: Blender's GLB export embeds everything). If it does reference
//! external buffers or images, the GLB is rebuilt: the same inlining is
//! applied to its JSON chunk and every other chunk (the BIN chunk) is copied
//! unchanged. We rebuild rather than refuse because it costs little (the
//! JSON chunk is small and the inlining code is shared with `.gltf`) and a
//! GLB with external textures is valid glTF that artists do produce.
//!
//! A `.gltf` document with nothing to inline is also returned unchanged.
//!
//! Between `canonicalize` and the read, a file in the scene directory could
//! be swapped for a symlink; the scene directory is the submitter's own, so
//! this only lets them read what they could already read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

/// Default bound on the bytes [`pack_scene`] reads: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

const GLB_MAGIC: &[u8; 4] = b"glTF";
const CHUNK_JSON: u32 = 0x4E4F_534A; // "JSON"

/// Why a scene could not be packed. Every variant names the scene file, and
/// those about a reference name its URI and the file it resolved to.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("reading scene {scene}: {source}")]
    ReadScene { scene: PathBuf, source: io::Error },
    #[error("{scene} is neither GLB (no \"glTF\" magic) nor glTF JSON: {source}")]
    NotGltf { scene: PathBuf, source: serde_json::Error },
    #[error("{scene}: malformed glTF: {reason}")]
    Malformed { scene: PathBuf, reason: String },
    #[error("{scene}: malformed GLB: {reason}")]
    MalformedGlb { scene: PathBuf, reason: String },
    #[error("{scene}: {field} uri {uri:?} refused: {reason}")]
    RefusedUri { scene: PathBuf, field: String, uri: String, reason: String },
    #[error("{scene}: {field} uri {uri:?}: reading {file}: {source}")]
    ReadReference { scene: PathBuf, field: String, uri: String, file: PathBuf, source: io::Error },
    #[error("{scene}: {field} uri {uri:?} ({file}): not PNG or JPEG and no mimeType given")]
    UnknownImageType { scene: PathBuf, field: String, uri: String, file: PathBuf },
    #[error("{scene}: {field} mimeType {mime:?} is not a valid media type")]
    BadMimeType { scene: PathBuf, field: String, mime: String },
    #[error("{scene}: packing needs more than the limit of {max_bytes} bytes ({what})")]
    TooLarge { scene: PathBuf, max_bytes: u64, what: String },
    #[error("{scene}: serialising the packed document: {source}")]
    Serialize { scene: PathBuf, source: serde_json::Error },
}

/// Packs the scene at `path` (`.glb` or `.gltf`) with the default limit of
/// [`DEFAULT_MAX_BYTES`] read in total.
pub fn pack_scene(path: &Path) -> Result<Vec<u8>, PackError> {
    pack_scene_with_limit(path, DEFAULT_MAX_BYTES)
}

/// Packs the scene at `path`, reading at most `max_bytes` in total (the scene
/// file plus every file it references).
pub fn pack_scene_with_limit(path: &Path, max_bytes: u64) -> Result<Vec<u8>, PackError> {
    let mut packer = Packer { scene: path.to_path_buf(), base: None, files: None, max_bytes, used: 0 };
    let bytes = packer.read_scene()?;
    packer.pack(bytes)
}

/// Packs a scene that arrived as bytes with the files it references (an
/// upload: the scene's name, its bytes, and each other file under the path
/// it had relative to the scene, `textures/wood.png`), reading at most
/// `max_bytes` of references. A reference is looked up by its normalised
/// path, then by its file name alone when exactly one file has that name
/// (a browser drop of loose files keeps names, not folders). The same
/// URI rules as for files on disk apply; nothing touches the file system.
pub fn pack_scene_bytes(
    name: &str,
    bytes: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
    max_bytes: u64,
) -> Result<Vec<u8>, PackError> {
    let mut packer = Packer { scene: PathBuf::from(name), base: None, files: Some(files), max_bytes, used: 0 };
    packer.pack(bytes)
}

struct Packer {
    scene: PathBuf,
    /// The canonical directory of the scene, resolved on first use.
    base: Option<PathBuf>,
    /// The referenced files by relative path, for a scene that came as
    /// bytes ([`pack_scene_bytes`]); `None`: read them from `base`.
    files: Option<BTreeMap<String, Vec<u8>>>,
    max_bytes: u64,
    /// Bytes read so far.
    used: u64,
}

/// Which kind of reference a URI belongs to.
#[derive(Clone, Copy)]
enum Kind {
    Buffer,
    Image,
}

impl Packer {
    fn pack(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, PackError> {
        if bytes.starts_with(GLB_MAGIC) {
            self.pack_glb(bytes)
        } else {
            self.pack_gltf(bytes)
        }
    }

    /// A referenced file from the uploaded set, by path or unique name.
    fn uploaded(&mut self, field: &str, uri: &str, relative: &Path) -> Result<Option<Vec<u8>>, PackError> {
        let Some(files) = &self.files else { return Ok(None) };
        let key: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let key = key.join("/");
        let found = files.get(&key).or_else(|| {
            let name = relative.file_name()?.to_string_lossy().into_owned();
            let mut same = files.iter().filter(|(k, _)| k.rsplit('/').next() == Some(name.as_str()));
            match (same.next(), same.next()) {
                (Some((_, v)), None) => Some(v),
                _ => None,
            }
        });
        let Some(bytes) = found else {
            return Err(PackError::ReadReference {
                scene: self.scene.clone(),
                field: field.to_owned(),
                uri: uri.to_owned(),
                file: relative.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotFound, "not among the uploaded files"),
            });
        };
        let len = bytes.len() as u64;
        if len > self.max_bytes.saturating_sub(self.used) {
            return Err(PackError::TooLarge {
                scene: self.scene.clone(),
                max_bytes: self.max_bytes,
                what: format!("{field} uri {uri:?} is {len} bytes"),
            });
        }
        self.used += len;
        Ok(Some(bytes.clone()))
    }

    fn read_scene(&mut self) -> Result<Vec<u8>, PackError> {
        let err = |source| PackError::ReadScene { scene: self.scene.clone(), source };
        let file = File::open(&self.scene).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        let what = || format!("the scene file is {len} bytes");
        self.read_bounded(file, len, what).map_err(|e| match e {
            Bounded::Io(source) => PackError::ReadScene { scene: self.scene.clone(), source },
            Bounded::TooLarge(e) => e,
        })
    }

    /// Reads `file` (of `len` bytes by its metadata) within what is left of
    /// the limit, counting what it reads.
    fn read_bounded(&mut self, file: File, len: u64, what: impl Fn() -> String) -> Result<Vec<u8>, Bounded> {
        let left = self.max_bytes.saturating_sub(self.used);
        let too_large = || {
            Bounded::TooLarge(PackError::TooLarge {
                scene: self.scene.clone(),
                max_bytes: self.max_bytes,
                what: what(),
            })
        };
        if len > left {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(len as usize);
        // One byte more than allowed tells a file that grew since its metadata.
        file.take(left.saturating_add(1)).read_to_end(&mut bytes).map_err(Bounded::Io)?;
        if bytes.len() as u64 > left {
            return Err(too_large());
        }
        self.used += bytes.len() as u64;
        Ok(bytes)
    }

    fn pack_gltf(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, PackError> {
        let mut doc: Value = serde_json::from_slice(&bytes)
            .map_err(|source| PackError::NotGltf { scene: self.scene.clone(), source })?;
        if !self.inline_references(&mut doc)? {
            return Ok(bytes);
        }
        serde_json::to_vec(&doc).map_err(|source| PackError::Serialize { scene: self.scene.clone(), source })
    }

    fn pack_glb(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, PackError> {
        let bad = |reason: String| PackError::MalformedGlb { scene: self.scene.clone(), reason };
        let u32_at = |at: usize| -> Option<u32> {
            bytes.get(at..at.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let version = u32_at(4).ok_or_else(|| bad("shorter than its 12-byte header".into()))?;
        if version != 2 {
            return Err(bad(format!("version {version}; only glTF 2.0 GLB is supported")));
        }
        let declared = u32_at(8).ok_or_else(|| bad("shorter than its 12-byte header".into()))? as usize;
        if declared > bytes.len() || declared < 20 {
            return Err(bad(format!("header declares {declared} bytes, the file has {}", bytes.len())));
        }
        let json_len = u32_at(12).ok_or_else(|| bad("no JSON chunk".into()))? as usize;
        if u32_at(16) != Some(CHUNK_JSON) {
            return Err(bad("the first chunk is not JSON".into()));
        }
        let json_end = 20usize
            .checked_add(json_len)
            .filter(|&e| e <= declared)
            .ok_or_else(|| bad(format!("JSON chunk of {json_len} bytes runs past the end")))?;
        // The chunk is padded with spaces; tolerate the NULs some writers use.
        let json = &bytes[20..json_end];
        let json = &json[..json.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)];
        let mut doc: Value =
            serde_json::from_slice(json).map_err(|e| bad(format!("JSON chunk does not parse: {e}")))?;
        if !self.inline_references(&mut doc)? {
            return Ok(bytes);
        }
        let mut new_json =
            serde_json::to_vec(&doc).map_err(|source| PackError::Serialize { scene: self.scene.clone(), source })?;
        new_json.resize(new_json.len().next_multiple_of(4), b' ');
        let rest = &bytes[json_end..declared];
        let total = 20 + new_json.len() + rest.len();
        let total32 = u32::try_from(total).map_err(|_| PackError::TooLarge {
            scene: self.scene.clone(),
            max_bytes: self.max_bytes,
            what: format!("the rebuilt GLB would be {total} bytes; GLB cannot exceed 4 GiB"),
        })?;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(GLB_MAGIC);
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&total32.to_le_bytes());
        out.extend_from_slice(&(new_json.len() as u32).to_le_bytes());
        out.extend_from_slice(&CHUNK_JSON.to_le_bytes());
        out.extend_from_slice(&new_json);
        out.extend_from_slice(rest);
        Ok(out)
    }

    /// Replaces every external `buffers[i].uri` and `images[i].uri` with a
    /// data URI. Returns whether anything changed.
    fn inline_references(&mut self, doc: &mut Value) -> Result<bool, PackError> {
        let scene = self.scene.clone();
        let malformed = |reason: String| PackError::Malformed { scene: scene.clone(), reason };
        let root = doc.as_object_mut().ok_or_else(|| malformed("the document is not a JSON object".into()))?;
        let mut changed = false;
        for (key, kind) in [("buffers", Kind::Buffer), ("images", Kind::Image)] {
            let Some(list) = root.get_mut(key) else { continue };
            let list = list.as_array_mut().ok_or_else(|| malformed(format!("{key} is not an array")))?;
            for (i, item) in list.iter_mut().enumerate() {
                let field = format!("{key}[{i}]");
                let obj = item.as_object_mut().ok_or_else(|| malformed(format!("{field} is not an object")))?;
                let uri = match obj.get("uri") {
                    None => continue,
                    Some(Value::String(uri)) => uri.clone(),
                    Some(_) => return Err(malformed(format!("{field}.uri is not a string"))),
                };
                if has_prefix_ignore_case(&uri, "data:") {
                    continue;
                }
                let mime = match (kind, obj.get("mimeType")) {
                    (Kind::Buffer, _) | (Kind::Image, None) => None,
                    (Kind::Image, Some(Value::String(m))) if is_media_type(m) => Some(m.clone()),
                    (Kind::Image, Some(m)) => {
                        let mime = m.as_str().map_or_else(|| m.to_string(), str::to_owned);
                        return Err(PackError::BadMimeType { scene, field, mime });
                    }
                };
                let data_uri = self.data_uri(kind, &field, &uri, mime)?;
                obj.insert("uri".into(), Value::String(data_uri));
                changed = true;
            }
        }
        Ok(changed)
    }

    fn data_uri(&mut self, kind: Kind, field: &str, uri: &str, mime: Option<String>) -> Result<String, PackError> {
        let scene = self.scene.clone();
        let refuse = |reason: &str| PackError::RefusedUri {
            scene: scene.clone(),
            field: field.to_owned(),
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let relative = relative_path(uri).map_err(refuse)?;
        if let Some(bytes) = self.uploaded(field, uri, &relative)? {
            let file = relative.clone();
            return self.encode(kind, field, uri, mime, &file, &bytes);
        }
        let base = self.base_dir()?;
        let joined = base.join(&relative);
        let read_err = |file: &Path, source| PackError::ReadReference {
            scene: scene.clone(),
            field: field.to_owned(),
            uri: uri.to_owned(),
            file: file.to_path_buf(),
            source,
        };
        let file = joined.canonicalize().map_err(|e| read_err(&joined, e))?;
        if !file.starts_with(&base) {
            return Err(refuse(&format!(
                "it resolves (through a symlink) to {}, outside the scene directory",
                file.display()
            )));
        }
        let handle = File::open(&file).map_err(|e| read_err(&file, e))?;
        let meta = handle.metadata().map_err(|e| read_err(&file, e))?;
        if !meta.is_file() {
            return Err(refuse(&format!("{} is not a regular file", file.display())));
        }
        let what = || format!("{field} uri {uri:?} ({}) is {} bytes", file.display(), meta.len());
        let bytes = self.read_bounded(handle, meta.len(), what).map_err(|e| match e {
            Bounded::Io(source) => read_err(&file, source),
            Bounded::TooLarge(e) => e,
        })?;
        self.encode(kind, field, uri, mime, &file, &bytes)
    }

    /// `bytes` (the file `file` that `uri` names) as a data URI.
    fn encode(
        &self,
        kind: Kind,
        field: &str,
        uri: &str,
        mime: Option<String>,
        file: &Path,
        bytes: &[u8],
    ) -> Result<String, PackError> {
        let scene = self.scene.clone();
        let mime = match (kind, mime) {
            (Kind::Buffer, _) => "application/octet-stream".to_owned(),
            (Kind::Image, Some(m)) => m,
            (Kind::Image, None) => sniff_image(bytes)
                .ok_or_else(|| PackError::UnknownImageType {
                    scene: scene.clone(),
                    field: field.to_owned(),
                    uri: uri.to_owned(),
                    file: file.to_path_buf(),
                })?
                .to_owned(),
        };
        let mut out = format!("data:{mime};base64,");
        base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut out);
        Ok(out)
    }

    fn base_dir(&mut self) -> Result<PathBuf, PackError> {
        if let Some(base) = &self.base {
            return Ok(base.clone());
        }
        let dir = match self.scene.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = dir.canonicalize().map_err(|source| PackError::ReadScene { scene: self.scene.clone(), source })?;
        self.base = Some(base.clone());
        Ok(base)
    }
}

enum Bounded {
    Io(io::Error),
    TooLarge(PackError),
}

fn has_prefix_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// A URI reference as a relative path inside the scene directory, or why not.
fn relative_path(uri: &str) -> Result<PathBuf, &'static str> {
    if uri.is_empty() {
        return Err("an empty uri refers to the document itself");
    }
    // RFC 3986: a scheme is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) before
    // the first ':' of the first segment. Drive letters (C:) look the same.
    if let Some(colon) = uri.find(':') {
        let first = &uri[..colon];
        let mut chars = first.chars();
        if chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err("only relative file paths and data: URIs can be packed, not URLs");
        }
        if !first.contains('/') {
            return Err("a ':' in the first path segment makes it a URL scheme");
        }
    }
    if uri.contains(['?', '#']) {
        return Err("queries and fragments ('?', '#') are not supported in file references");
    }
    if uri.contains('\\') {
        return Err("backslashes are not path separators in URIs");
    }
    let decoded = percent_decode(uri).ok_or("malformed percent-encoding")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "the percent-decoded path is not UTF-8")?;
    if decoded.contains('\0') {
        return Err("the path contains a NUL byte");
    }
    if decoded.starts_with('/') || decoded.contains('\\') || Path::new(&decoded).is_absolute() {
        return Err("absolute paths are not allowed; use a path relative to the scene file");
    }
    let mut normal = PathBuf::new();
    for part in Path::new(&decoded).components() {
        match part {
            Component::Normal(p) => normal.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    return Err("the path climbs out of the scene file's directory");
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed; use a path relative to the scene file")
            }
        }
    }
    if normal.as_os_str().is_empty() {
        return Err("the path names the scene directory itself");
    }
    Ok(normal)
}

/// Decodes `%XX` escapes; `None` if an escape is malformed.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A media type `type/subtype` made of RFC 2045 token characters (so it
/// cannot break out of the data URI's header).
fn is_media_type(m: &str) -> bool {
    let token =
        |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b));
    m.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
}

fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-not-really-a-png";
    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4];

    fn write_gltf(dir: &Path, name: &str, doc: &Value) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        path
    }

    fn one_buffer(uri: &str) -> Value {
        json!({"asset": {"version": "2.0"}, "buffers": [{"uri": uri, "byteLength": 4}]})
    }

    /// (mime, bytes) of a data URI.
    fn decode_data_uri(uri: &str) -> (String, Vec<u8>) {
        let rest = uri.strip_prefix("data:").expect("a data URI");
        let (mime, b64) = rest.split_once(";base64,").expect("base64");
        (mime.to_owned(), base64::engine::general_purpose::STANDARD.decode(b64).unwrap())
    }

    fn glb(json: &Value, bin: &[u8]) -> Vec<u8> {
        let mut j = serde_json::to_vec(json).unwrap();
        j.resize(j.len().next_multiple_of(4), b' ');
        let mut b = bin.to_vec();
        b.resize(b.len().next_multiple_of(4), 0);
        let total = 12 + 8 + j.len() + 8 + b.len();
        let mut out = b"glTF".to_vec();
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&(j.len() as u32).to_le_bytes());
        out.extend_from_slice(b"JSON");
        out.extend_from_slice(&j);
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b"BIN\0");
        out.extend_from_slice(&b);
        out
    }

    fn refused(result: Result<Vec<u8>, PackError>, uri: &str) -> String {
        match result {
            Err(e @ PackError::RefusedUri { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("{uri:?}")), "{msg}");
                msg
            }
            other => panic!("{uri}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn gltf_external_buffer_and_images_are_inlined() {
        let dir = tempfile::tempdir().unwrap();
        let bin: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        std::fs::write(dir.path().join("my file.bin"), &bin).unwrap();
        std::fs::create_dir(dir.path().join("tex")).unwrap();
        std::fs::write(dir.path().join("tex/albedo.png"), PNG).unwrap();
        std::fs::write(dir.path().join("rough.jpg"), JPEG).unwrap();
        std::fs::write(dir.path().join("tagged.dat"), b"anything").unwrap();
        let doc = json!({
            "asset": {"version": "2.0", "generator": "test"},
            "extras": {"unknown": [1, 2, 3]},
            "buffers": [
                {"uri": "my%20file.bin", "byteLength": 1000, "name": "geo"},
                {"uri": "data:application/octet-stream;base64,AAEC", "byteLength": 3}
            ],
            "images": [
                {"uri": "tex/albedo.png"},
                {"uri": "./sub/../rough.jpg"},
                {"uri": "tagged.dat", "mimeType": "image/webp"},
                {"bufferView": 0, "mimeType": "image/png"}
            ]
        });
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let scene = write_gltf(dir.path(), "scene.gltf", &doc);

        let packed: Value = serde_json::from_slice(&pack_scene(&scene).unwrap()).unwrap();
        assert_eq!(
            decode_data_uri(packed["buffers"][0]["uri"].as_str().unwrap()),
            ("application/octet-stream".into(), bin)
        );
        assert_eq!(packed["buffers"][1], doc["buffers"][1], "data: URIs are kept");
        assert_eq!(decode_data_uri(packed["images"][0]["uri"].as_str().unwrap()), ("image/png".into(), PNG.to_vec()));
        assert_eq!(decode_data_uri(packed["images"][1]["uri"].as_str().unwrap()), ("image/jpeg".into(), JPEG.to_vec()));
        assert_eq!(
            decode_data_uri(packed["images"][2]["uri"].as_str().unwrap()),
            ("image/webp".into(), b"anything".to_vec())
        );
        assert_eq!(packed["images"][3], doc["images"][3]);
        // Everything else is untouched.
        assert_eq!(packed["extras"], doc["extras"]);
        assert_eq!(packed["asset"], doc["asset"]);
        assert_eq!(packed["buffers"][0]["name"], "geo");
        assert_eq!(packed["buffers"][0]["byteLength"], 1000);
    }

    #[test]
    fn gltf_without_external_files_is_returned_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let scene = write_gltf(dir.path(), "s.gltf", &one_buffer("data:application/octet-stream;base64,AAAAAA=="));
        assert_eq!(pack_scene(&scene).unwrap(), std::fs::read(&scene).unwrap());
        let scene = write_gltf(dir.path(), "t.gltf", &json!({"asset": {"version": "2.0"}}));
        assert_eq!(pack_scene(&scene).unwrap(), std::fs::read(&scene).unwrap());
    }

    #[test]
    fn parent_directory_escapes_are_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("secret.bin"), b"secret").unwrap();
        let dir = root.path().join("scene");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        for uri in ["../secret.bin", "sub/../../secret.bin", "%2e%2e/secret.bin", "./../scene/../secret.bin"] {
            let scene = write_gltf(&dir, "s.gltf", &one_buffer(uri));
            let msg = refused(pack_scene(&scene), uri);
            assert!(msg.contains("climbs out"), "{msg}");
        }
    }

    #[test]
    fn absolute_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("a.bin");
        std::fs::write(&inside, b"abcd").unwrap();
        // Absolute even when it points inside the scene directory.
        let abs = inside.to_str().unwrap().to_owned();
        for uri in ["/etc/passwd", abs.as_str(), "%2Fetc%2Fpasswd", "//server/share/a.bin"] {
            let scene = write_gltf(dir.path(), "s.gltf", &one_buffer(uri));
            let msg = refused(pack_scene(&scene), uri);
            assert!(msg.contains("absolute"), "{msg}");
        }
    }

    #[test]
    fn urls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"abcd").unwrap();
        for uri in
            ["http://example.com/a.bin", "HTTPS://example.com/a.bin", "file:///etc/passwd", "file:a.bin", "C:/a.bin"]
        {
            let scene = write_gltf(dir.path(), "s.gltf", &one_buffer(uri));
            refused(pack_scene(&scene), uri);
        }
        for uri in ["", "a.bin?x=1", "a.bin#frag", "sub\\a.bin", "a%2", "a%zz.bin", "a%ff.bin", "."] {
            let scene = write_gltf(dir.path(), "s.gltf", &one_buffer(uri));
            refused(pack_scene(&scene), uri);
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_directory_are_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("secret.bin"), b"secret").unwrap();
        let dir = root.path().join("scene");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.bin"), dir.join("link.bin")).unwrap();
        let scene = write_gltf(&dir, "s.gltf", &one_buffer("link.bin"));
        let msg = refused(pack_scene(&scene), "link.bin");
        assert!(msg.contains("outside the scene directory"), "{msg}");
        // A symlink that stays inside is fine.
        std::fs::write(dir.join("real.bin"), b"real").unwrap();
        std::os::unix::fs::symlink(dir.join("real.bin"), dir.join("inside.bin")).unwrap();
        let scene = write_gltf(&dir, "s.gltf", &one_buffer("inside.bin"));
        let packed: Value = serde_json::from_slice(&pack_scene(&scene).unwrap()).unwrap();
        assert_eq!(decode_data_uri(packed["buffers"][0]["uri"].as_str().unwrap()).1, b"real");
        // So is a directory named like a file: refused, not read.
        std::fs::create_dir(dir.join("adir.bin")).unwrap();
        let scene = write_gltf(&dir, "s.gltf", &one_buffer("adir.bin"));
        refused(pack_scene(&scene), "adir.bin");
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let scene = write_gltf(dir.path(), "s.gltf", &one_buffer("missing%20part.bin"));
        let err = pack_scene(&scene).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(&err, PackError::ReadReference { source, .. } if source.kind() == io::ErrorKind::NotFound));
        assert!(msg.contains("\"missing%20part.bin\""), "{msg}");
        assert!(msg.contains("missing part.bin"), "{msg}");
        assert!(msg.contains("buffers[0]"), "{msg}");
        // A missing scene is an error too.
        assert!(matches!(pack_scene(&dir.path().join("nope.gltf")), Err(PackError::ReadScene { .. })));
    }

    #[test]
    fn images_of_unknown_type_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.img"), b"GIF89a....").unwrap();
        let scene = write_gltf(dir.path(), "s.gltf", &json!({"images": [{"uri": "a.img"}]}));
        let err = pack_scene(&scene).unwrap_err();
        assert!(matches!(err, PackError::UnknownImageType { .. }), "{err}");
        assert!(err.to_string().contains("\"a.img\""), "{err}");
        // A mimeType that would break the data URI header is refused.
        let scene =
            write_gltf(dir.path(), "s.gltf", &json!({"images": [{"uri": "a.img", "mimeType": "image/png;base64,"}]}));
        assert!(matches!(pack_scene(&scene), Err(PackError::BadMimeType { .. })));
    }

    #[test]
    fn glb_is_returned_unchanged_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let doc = json!({"asset": {"version": "2.0"}, "buffers": [{"byteLength": 6}], "images": [{"bufferView": 0, "mimeType": "image/png"}]});
        let bytes = glb(&doc, b"\x01\x02\x03\x04\x05\x06");
        for name in ["scene.glb", "scene.gltf", "scene"] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(pack_scene(&path).unwrap(), bytes, "{name}");
        }
    }

    #[test]
    fn glb_with_external_references_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("extra.bin"), b"EXTRA").unwrap();
        std::fs::write(dir.path().join("t.png"), PNG).unwrap();
        let doc = json!({
            "asset": {"version": "2.0"},
            "buffers": [{"byteLength": 8}, {"uri": "extra.bin", "byteLength": 5}],
            "images": [{"uri": "t.png"}]
        });
        let bin = b"BINCHUNK";
        let path = dir.path().join("s.glb");
        std::fs::write(&path, glb(&doc, bin)).unwrap();
        let out = pack_scene(&path).unwrap();
        assert_eq!(&out[..4], b"glTF");
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(out[8..12].try_into().unwrap()) as usize, out.len());
        let json_len = u32::from_le_bytes(out[12..16].try_into().unwrap()) as usize;
        assert_eq!(json_len % 4, 0);
        assert_eq!(&out[16..20], b"JSON");
        let packed: Value = serde_json::from_slice(&out[20..20 + json_len]).unwrap();
        assert_eq!(decode_data_uri(packed["buffers"][1]["uri"].as_str().unwrap()).1, b"EXTRA");
        assert_eq!(decode_data_uri(packed["images"][0]["uri"].as_str().unwrap()), ("image/png".into(), PNG.to_vec()));
        assert_eq!(packed["buffers"][0], doc["buffers"][0]);
        // The BIN chunk follows unchanged.
        let rest = &out[20 + json_len..];
        assert_eq!(u32::from_le_bytes(rest[..4].try_into().unwrap()), 8);
        assert_eq!(&rest[4..8], b"BIN\0");
        assert_eq!(&rest[8..], bin);
        // And the rebuilt GLB has nothing left to inline.
        let again = dir.path().join("again.glb");
        std::fs::write(&again, &out).unwrap();
        assert_eq!(pack_scene(&again).unwrap(), out);
    }

    #[test]
    fn glb_references_are_checked_like_gltf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.glb");
        std::fs::write(&path, glb(&one_buffer("../x.bin"), b"")).unwrap();
        refused(pack_scene(&path), "../x.bin");
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        for (bytes, want) in [
            (b"glTF".to_vec(), "header"),
            ([b"glTF".as_slice(), &1u32.to_le_bytes(), &100u32.to_le_bytes()].concat(), "version 1"),
            ([b"glTF".as_slice(), &2u32.to_le_bytes(), &1000u32.to_le_bytes(), &[0; 8]].concat(), "declares"),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let err = pack_scene(&path).unwrap_err();
            assert!(matches!(err, PackError::MalformedGlb { .. }) && err.to_string().contains(want), "{err}");
        }
        let mut bad_chunk = glb(&json!({}), b"");
        bad_chunk[16..20].copy_from_slice(b"BIN\0");
        std::fs::write(&path, &bad_chunk).unwrap();
        assert!(matches!(pack_scene(&path), Err(PackError::MalformedGlb { .. })));

        std::fs::write(&path, b"not json at all").unwrap();
        assert!(matches!(pack_scene(&path), Err(PackError::NotGltf { .. })));
        std::fs::write(&path, b"[1, 2]").unwrap();
        assert!(matches!(pack_scene(&path), Err(PackError::Malformed { .. })));
        std::fs::write(&path, br#"{"buffers": {"uri": "a.bin"}}"#).unwrap();
        assert!(matches!(pack_scene(&path), Err(PackError::Malformed { .. })));
        std::fs::write(&path, br#"{"buffers": [{"uri": 7}]}"#).unwrap();
        assert!(matches!(pack_scene(&path), Err(PackError::Malformed { .. })));
    }

    #[test]
    fn the_size_limit_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.bin"), vec![7u8; 1000]).unwrap();
        let scene = write_gltf(dir.path(), "s.gltf", &one_buffer("big.bin"));
        let scene_len = std::fs::metadata(&scene).unwrap().len();
        // Scene + file fit exactly.
        assert!(pack_scene_with_limit(&scene, scene_len + 1000).is_ok());
        // One byte short.
        let err = pack_scene_with_limit(&scene, scene_len + 999).unwrap_err();
        assert!(matches!(err, PackError::TooLarge { max_bytes, .. } if max_bytes == scene_len + 999), "{err}");
        assert!(err.to_string().contains("big.bin"), "{err}");
        // The scene file alone counts.
        let err = pack_scene_with_limit(&scene, scene_len - 1).unwrap_err();
        assert!(matches!(err, PackError::TooLarge { .. }), "{err}");
        // GLB too.
        let path = dir.path().join("s.glb");
        let bytes = glb(&json!({"asset": {"version": "2.0"}}), &[0; 64]);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(pack_scene_with_limit(&path, bytes.len() as u64 - 1), Err(PackError::TooLarge { .. })));
        assert_eq!(pack_scene_with_limit(&path, bytes.len() as u64).unwrap(), bytes);
    }

    /// An upload: references found by path, then by unique file name; the
    /// same refusals as on disk; nothing read from the file system.
    #[test]
    fn uploaded_files_are_inlined_by_path_or_unique_name() {
        let bin: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let doc = json!({
            "asset": {"version": "2.0"},
            "buffers": [{"uri": "data/my%20file.bin", "byteLength": 300}],
            "images": [{"uri": "tex/albedo.png"}],
        });
        let scene = serde_json::to_vec(&doc).unwrap();
        let files = |pairs: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
        };
        // By path.
        let packed = pack_scene_bytes(
            "s.gltf",
            scene.clone(),
            files(&[("data/my file.bin", &bin), ("tex/albedo.png", PNG)]),
            1 << 20,
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&packed).unwrap();
        assert_eq!(decode_data_uri(out["buffers"][0]["uri"].as_str().unwrap()).1, bin);
        assert_eq!(decode_data_uri(out["images"][0]["uri"].as_str().unwrap()), ("image/png".into(), PNG.to_vec()));
        // By unique file name (a drop of loose files).
        let loose = files(&[("my file.bin", &bin), ("albedo.png", PNG)]);
        assert_eq!(pack_scene_bytes("s.gltf", scene.clone(), loose, 1 << 20).unwrap(), packed);
        // Two files of that name in different folders: ambiguous, so missing.
        let twice = files(&[("a/my file.bin", &bin), ("b/my file.bin", &bin), ("albedo.png", PNG)]);
        let err = pack_scene_bytes("s.gltf", scene.clone(), twice, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not among the uploaded files"), "{err}");
        // The limit counts uploaded bytes.
        let err = pack_scene_bytes("s.gltf", scene.clone(), files(&[("my file.bin", &bin), ("albedo.png", PNG)]), 100)
            .unwrap_err();
        assert!(matches!(err, PackError::TooLarge { .. }), "{err}");
        // Escapes are refused before any lookup, even when a file matches.
        let climbing =
            serde_json::to_vec(&json!({"asset": {"version": "2.0"}, "buffers": [{"uri": "../x.bin"}]})).unwrap();
        refused(pack_scene_bytes("s.gltf", climbing, files(&[("x.bin", &bin)]), 1 << 20), "../x.bin");
        let url = serde_json::to_vec(&json!({"asset": {"version": "2.0"}, "buffers": [{"uri": "file:///etc/passwd"}]}))
            .unwrap();
        refused(pack_scene_bytes("s.gltf", url, files(&[("passwd", &bin)]), 1 << 20), "file:///etc/passwd");
    }
}
