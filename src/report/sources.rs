//! The files a report reads, and their lines one at a time.
//!
//! Nothing here holds more than one line: a log of ten million records is
//! read in constant memory. Files ending in `.gz` are decompressed as they
//! are read. The progress bar counts bytes of the files as stored (before
//! decompression), so it moves evenly over gzipped and plain files alike.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tollgate_host::gateway::log_writer::rotated_files;

/// Below this many bytes a report finishes before a bar would be worth drawing.
const PROGRESS_FROM_BYTES: u64 = 64 * 1024 * 1024;

/// Which format a file's lines are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// tollgate's own invocation log (`tollgate.costNanoUsd` and the rest).
    Tollgate,
    /// Bedrock's model-invocation log, as AWS delivers it to S3.
    Bedrock,
}

/// One file to read.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
    pub bytes: u64,
}

/// The files of a tollgate log: those rotated away from `path` (oldest
/// first), then `path` itself if it is there.
pub fn tollgate_files(path: &Path) -> Result<Vec<Source>> {
    let mut files = rotated_files(path);
    if path.is_dir() {
        bail!(
            "--log {} is a folder; name the log file (the [log] invocations path of tollgate.toml), \
             and its rotated files beside it are read too",
            path.display()
        );
    }
    if path.exists() {
        files.push(path.to_path_buf());
    }
    if files.is_empty() {
        bail!(
            "no invocation log at {} (nor any file rotated from it); check the path, or the [log] invocations \
             setting of tollgate.toml",
            path.display()
        );
    }
    files.into_iter().map(|p| source(p, Format::Tollgate)).collect()
}

/// Every `.json.gz` and `.json` file under `dir`, in path order: Bedrock's S3
/// layout (`AWSLogs/<account>/BedrockModelInvocationLogs/<region>/yyyy/mm/dd/hh/`)
/// sorts by time.
pub fn bedrock_files(dir: &Path) -> Result<Vec<Source>> {
    if !dir.exists() {
        bail!(
            "--bedrock-logs {} does not exist; download the logs first, e.g. \
             aws s3 sync s3://BUCKET/PREFIX/AWSLogs/ {}",
            dir.display(),
            dir.display()
        );
    }
    if dir.is_file() {
        return Ok(vec![source(dir.to_path_buf(), Format::Bedrock)?]);
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("cannot walk {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy();
        if entry.file_type().is_file() && (name.ends_with(".json.gz") || name.ends_with(".json")) {
            files.push(source(entry.into_path(), Format::Bedrock)?);
        }
    }
    if files.is_empty() {
        bail!(
            "no Bedrock invocation logs (.json.gz or .json files) under {}; point --bedrock-logs at the folder \
             the S3 logs were downloaded to",
            dir.display()
        );
    }
    Ok(files)
}

fn source(path: PathBuf, format: Format) -> Result<Source> {
    let bytes = std::fs::metadata(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    Ok(Source { path, format, bytes })
}

/// A bar on stderr for large inputs, hidden when stderr is not a terminal.
pub fn progress(sources: &[Source]) -> ProgressBar {
    let total: u64 = sources.iter().map(|s| s.bytes).sum();
    if total < PROGRESS_FROM_BYTES || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{wide_bar} {bytes}/{total_bytes} eta {eta}") {
        bar.set_style(style);
    }
    bar
}

/// Opens `source` for reading, decompressing a `.gz` file as it is read.
pub fn open(source: &Source, bar: &ProgressBar) -> Result<Box<dyn BufRead>> {
    let file = File::open(&source.path).with_context(|| format!("cannot open {}", source.path.display()))?;
    let counted = bar.wrap_read(file);
    Ok(if source.path.extension().is_some_and(|e| e == "gz") {
        // Multi-member: concatenated gzip files are one valid stream.
        Box::new(BufReader::with_capacity(256 * 1024, MultiGzDecoder::new(counted)))
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, counted))
    })
}

/// Hands each line of `reader` (without its end) to `each` with its 1-based
/// number, through one reused buffer. An error is the file's own (a
/// truncated gzip, a failing disk) after the lines already handed on.
pub fn for_each_line(reader: &mut dyn BufRead, mut each: impl FnMut(&str, u64)) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes)? == 0 {
            return Ok(());
        }
        number += 1;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        // Bytes that are not UTF-8 are read as replacement characters, so
        // one bad byte costs at most its line, never the rest of the file.
        match std::str::from_utf8(&bytes) {
            Ok(line) => each(line, number),
            Err(_) => each(&String::from_utf8_lossy(&bytes), number),
        }
    }
}
