//! The durable store's write-ahead log: each batch of changes is appended
//! with one `write`, and flushed with one `fdatasync` when the store
//! acknowledges after the flush (`commit = "fsync"`); the database takes
//! them in a checkpoint (one commit) now and then, and the log starts over.
//! After a crash the log is replayed into the database before anything
//! else reads it.
//!
//! A record is `length (u32 LE) | crc32 (u32 LE) | payload`, the payload one
//! batch of [`Write`]s. Replaying stops at the first record that is short or
//! fails its checksum: the tail of a write the process died in.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};

use crate::ids::TenantId;
use crate::money::NanoUsd;

use super::period::PeriodTotals;
use super::reservation::{OpenReservation, ReservationId};

/// One change, as the committer writes it to the database or the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Opened(TenantId, OpenReservation),
    Closed(ReservationId),
    Totals(TenantId, PeriodTotals),
}

const OPENED: u8 = 1;
const CLOSED: u8 = 2;
const TOTALS: u8 = 3;
const HEADER: usize = 8;
/// No batch comes near this; a larger length is a torn or foreign record.
const MAX_RECORD: usize = 256 << 20;

/// The log file, opened for appending.
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes appended since the last checkpoint.
    len: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens the log beside `db_path`, returning it and the batches it still
    /// holds (written after the last checkpoint), in order.
    pub(crate) fn open(db_path: &Path) -> io::Result<(Wal, Vec<Write>)> {
        let path = wal_path(db_path);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (writes, valid) = decode_records(&bytes);
        // Appends go after the last whole record, not after a torn one.
        if valid < bytes.len() {
            file.set_len(valid as u64)?;
        }
        // A log just created must still be found after a power cut.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        let wal = Wal {
            file,
            path,
            len: valid as u64,
            buf: Vec::new(),
        };
        Ok((wal, writes))
    }

    /// Appends one batch as one record with one `write` call: once it
    /// returns, the batch survives the process (not yet the machine).
    pub(crate) fn append(&mut self, batch: &[Write]) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER]);
        for write in batch {
            encode(write, &mut self.buf);
        }
        let payload_len = self.buf.len() - HEADER;
        let len = u32::try_from(payload_len).map_err(|_| io::Error::other("a ledger batch over 4 GiB"))?;
        let crc = crc32fast::hash(&self.buf[HEADER..]);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        Ok(())
    }

    /// Flushes what was appended to disk: once it returns, it survives a
    /// power cut.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Starts the log over, once the database holds everything in it durably.
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        if self.len > 0 {
            self.file.set_len(0)?;
            self.len = 0;
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// `ledger.redb` → `ledger.redb.wal`.
pub(crate) fn wal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

fn encode(write: &Write, out: &mut Vec<u8>) {
    let u64s = |out: &mut Vec<u8>, values: &[u64]| values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    let tenant = |out: &mut Vec<u8>, t: &TenantId| {
        // Tenant ids are at most 128 bytes (checked at creation): one length byte.
        let name = t.as_str().as_bytes();
        out.push(name.len().min(255) as u8);
        out.extend_from_slice(&name[..name.len().min(255)]);
    };
    match write {
        Write::Opened(t, r) => {
            out.push(OPENED);
            tenant(out, t);
            u64s(
                out,
                &[
                    r.id.0,
                    r.cost.get(),
                    r.tokens,
                    r.minute,
                    r.period_start_ms,
                    r.expires_at_ms,
                ],
            );
        }
        Write::Closed(id) => {
            out.push(CLOSED);
            u64s(out, &[id.0]);
        }
        Write::Totals(t, p) => {
            out.push(TOTALS);
            tenant(out, t);
            u64s(out, &[p.start_ms, p.end_ms, p.spent.get(), p.used_tokens, p.calls]);
        }
    }
}

/// Every whole record's writes, up to the first torn or corrupt one, and
/// the length of those records.
fn decode_records(mut bytes: &[u8]) -> (Vec<Write>, usize) {
    let mut writes = Vec::new();
    let mut valid = 0;
    while bytes.len() >= HEADER {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let Some(payload) = bytes.get(HEADER..HEADER + len).filter(|_| len <= MAX_RECORD) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match decode_batch(payload) {
            Some(batch) => writes.extend(batch),
            None => break,
        }
        bytes = &bytes[HEADER + len..];
        valid += HEADER + len;
    }
    (writes, valid)
}

fn decode_batch(mut payload: &[u8]) -> Option<Vec<Write>> {
    let mut batch = Vec::new();
    while let Some((&tag, rest)) = payload.split_first() {
        payload = rest;
        let write = match tag {
            OPENED => {
                let tenant = take_tenant(&mut payload)?;
                let [id, cost, tokens, minute, period_start_ms, expires_at_ms] = take_u64s(&mut payload)?;
                Write::Opened(
                    tenant,
                    OpenReservation {
                        id: ReservationId(id),
                        cost: NanoUsd(cost),
                        ceiling: NanoUsd(cost),
                        tokens,
                        minute,
                        period_start_ms,
                        expires_at_ms,
                    },
                )
            }
            CLOSED => {
                let [id] = take_u64s(&mut payload)?;
                Write::Closed(ReservationId(id))
            }
            TOTALS => {
                let tenant = take_tenant(&mut payload)?;
                let [start_ms, end_ms, spent, used_tokens, calls] = take_u64s(&mut payload)?;
                Write::Totals(
                    tenant,
                    PeriodTotals {
                        start_ms,
                        end_ms,
                        spent: NanoUsd(spent),
                        used_tokens,
                        calls,
                    },
                )
            }
            _ => return None,
        };
        batch.push(write);
    }
    Some(batch)
}

fn take_tenant(payload: &mut &[u8]) -> Option<TenantId> {
    let (&len, rest) = payload.split_first()?;
    let name = rest.get(..usize::from(len))?;
    *payload = &rest[usize::from(len)..];
    TenantId::new(std::str::from_utf8(name).ok()?).ok()
}

fn take_u64s<const N: usize>(payload: &mut &[u8]) -> Option<[u64; N]> {
    let mut out = [0; N];
    for value in &mut out {
        let bytes = payload.get(..8)?;
        *value = u64::from_le_bytes(bytes.try_into().ok()?);
        *payload = &payload[8..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Write> {
        let t = TenantId::new("acme").unwrap();
        vec![
            Write::Opened(
                t.clone(),
                OpenReservation {
                    id: ReservationId(7),
                    cost: NanoUsd(1_500),
                    ceiling: NanoUsd(1_500),
                    tokens: 40,
                    minute: 29_000_000,
                    period_start_ms: 1_700_000_000_000,
                    expires_at_ms: 1_700_000_300_000,
                },
            ),
            Write::Totals(
                t,
                PeriodTotals {
                    start_ms: 1,
                    end_ms: 2,
                    spent: NanoUsd(3),
                    used_tokens: 4,
                    calls: 5,
                },
            ),
            Write::Closed(ReservationId(7)),
        ]
    }

    #[test]
    fn batches_read_back_in_order_and_a_torn_tail_is_dropped() {
        let dir = std::env::temp_dir().join(format!("tollgate-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("ledger.redb");
        let _ = std::fs::remove_file(wal_path(&db));
        let (mut wal, recovered) = Wal::open(&db).unwrap();
        assert!(recovered.is_empty());
        wal.append(&sample()).unwrap();
        wal.append(&sample()[2..]).unwrap();
        drop(wal);
        let (_, recovered) = Wal::open(&db).unwrap();
        assert_eq!(recovered, [sample(), sample()[2..].to_vec()].concat());

        // A record cut short (the process died inside the write) is ignored,
        // and so is one whose bytes changed.
        let bytes = std::fs::read(wal_path(&db)).unwrap();
        for cut in 1..bytes.len() - 1 {
            std::fs::write(wal_path(&db), &bytes[..cut]).unwrap();
            let (_, recovered) = Wal::open(&db).unwrap();
            assert!(recovered == sample() || recovered.is_empty(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[HEADER + 3] ^= 0x40;
        std::fs::write(wal_path(&db), &flipped).unwrap();
        assert!(Wal::open(&db).unwrap().1.is_empty());

        // Appends after a torn record land where it began, so they are read back.
        std::fs::write(wal_path(&db), &bytes[..bytes.len() - 1]).unwrap();
        let (mut wal, recovered) = Wal::open(&db).unwrap();
        assert_eq!(recovered, sample());
        wal.append(&sample()).unwrap();
        assert_eq!(Wal::open(&db).unwrap().1, [sample(), sample()].concat());

        let (mut wal, _) = Wal::open(&db).unwrap();
        wal.reset().unwrap();
        assert!(Wal::open(&db).unwrap().1.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
