//! PNG files built by hand, chunk by chunk: for tests of what a decoder
//! must refuse (a header claiming 65536², a decompression bomb), which no
//! encoder would write.

/// The 8-byte PNG signature.
pub const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The IHDR data of an 8-bit RGBA image of `width` × `height`.
pub fn rgba_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 6, 0, 0, 0]);
    ihdr
}

/// One chunk: length, kind, data and CRC, appended to `out`.
pub fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut c = kind.to_vec();
    c.extend_from_slice(data);
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(&c);
    out.extend(crc32(&c).to_be_bytes());
}

/// A PNG file from its IHDR data and IDAT chunks' data, ending with IEND.
pub fn file(ihdr: &[u8], idats: &[&[u8]]) -> Vec<u8> {
    let mut png = SIGNATURE.to_vec();
    chunk(&mut png, b"IHDR", ihdr);
    for d in idats {
        chunk(&mut png, b"IDAT", d);
    }
    chunk(&mut png, b"IEND", b"");
    png
}

/// The CRC-32 (ISO-HDLC, as PNG and zlib's gzip use) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_png_specifications_iend() {
        // Every PNG ends with this IEND chunk.
        let mut out = Vec::new();
        chunk(&mut out, b"IEND", b"");
        assert_eq!(out, [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]);
    }
}
