//! Where a file on a thin device really lies: its filesystem's extents (FIEMAP, offsets on the
//! thin device) followed through the thin device's block mapping into the pool's data device.
//!
//! The filesystem on a thin snapshot writes in place, so its own extents do not change when a
//! container overwrites a file; the pool's copy-on-write does: the first write to a block the
//! snapshot shares with its origin gets a fresh data block, allocated in the order the writes
//! come. The mapping is read with `thin_dump --dev-id N -m` from a metadata snapshot that the
//! pool keeps for the duration (`reserve_metadata_snap`), as the kernel documentation
//! describes for reading a live pool's metadata.

use std::collections::BTreeMap;

use crate::extents::Piece;

/// Thin block → data block of one device, from `thin_dump`'s XML (`range_mapping` and
/// `single_mapping` elements).
pub fn parse_thin_dump(xml: &str) -> Result<BTreeMap<u64, u64>, String> {
    let mut map = BTreeMap::new();
    for el in xml.split('<').skip(1) {
        let attr = |name: &str| -> Result<u64, String> {
            let pat = format!("{name}=\"");
            let at = el.find(&pat).ok_or_else(|| format!("no {name} in <{}", el.trim_end()))? + pat.len();
            let end = el[at..].find('"').ok_or_else(|| format!("unterminated {name}"))?;
            el[at..at + end].parse().map_err(|_| format!("{name} is not a number in <{}", el.trim_end()))
        };
        if el.starts_with("range_mapping ") {
            let (o, d, n) = (attr("origin_begin")?, attr("data_begin")?, attr("length")?);
            for i in 0..n {
                map.insert(o + i, d + i);
            }
        } else if el.starts_with("single_mapping ") {
            map.insert(attr("origin_block")?, attr("data_block")?);
        }
    }
    Ok(map)
}

/// `pieces` (offsets on the thin device) cut at `block_bytes` boundaries and placed at their
/// data blocks. A piece over an unmapped thin block is an error: the filesystem says data is
/// there, the pool has none.
pub fn through_map(pieces: &[Piece], map: &BTreeMap<u64, u64>, block_bytes: u64) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    for p in pieces {
        let (mut logical, mut at, end) = (p.logical, p.physical, p.physical + p.length);
        while at < end {
            let block = at / block_bytes;
            let within = at % block_bytes;
            let len = (block_bytes - within).min(end - at);
            let data = map.get(&block).ok_or_else(|| {
                format!("thin block {block} (byte {at} of the thin device) holds file data but is not mapped in the pool")
            })?;
            let physical = data * block_bytes + within;
            out.push(Piece { logical, length: len, device: 0, physical, physical_length: len });
            logical += len;
            at += len;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extents::runs;

    const XML: &str = r#"<superblock uuid="" time="1" transaction="3" flags="0" version="2" data_block_size="128" nr_data_blocks="131072">
  <device dev_id="7" mapped_blocks="4" transaction="0" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="100" length="2" time="0"/>
    <single_mapping origin_block="2" data_block="900" time="1"/>
    <single_mapping origin_block="3" data_block="103" time="0"/>
  </device>
</superblock>"#;

    #[test]
    fn a_file_followed_into_the_pool() {
        let map = parse_thin_dump(XML).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!((map[&0], map[&1], map[&2], map[&3]), (100, 101, 900, 103));
        let bs = 65536;
        // One filesystem extent over thin blocks 0..4: contiguous on the thin device, three
        // runs in the pool (block 2 was copied elsewhere).
        let file = [Piece { logical: 0, length: 4 * bs, device: 0, physical: 0, physical_length: 4 * bs }];
        let placed = through_map(&file, &map, bs).unwrap();
        assert_eq!(placed.len(), 4);
        assert_eq!(placed.iter().map(|p| p.length).sum::<u64>(), 4 * bs);
        assert_eq!(runs(&placed), 3);
        // A piece starting inside a block keeps its offset in it.
        let part = [Piece { logical: 0, length: 4096, device: 0, physical: bs + 8192, physical_length: 4096 }];
        assert_eq!(through_map(&part, &map, bs).unwrap()[0].physical, 101 * bs + 8192);
        let unmapped = [Piece { logical: 0, length: 4096, device: 0, physical: 9 * bs, physical_length: 4096 }];
        assert!(through_map(&unmapped, &map, bs).unwrap_err().contains("thin block 9"));
        assert!(parse_thin_dump(r#"<single_mapping origin_block="x" data_block="1"/>"#).is_err());
    }
}
