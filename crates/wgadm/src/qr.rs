//! QR codes of client configs (FR-010), for a phone's WireGuard app to scan, like `pivpn -qr`.
//!
//! The text is always encoded as a single byte-mode segment so the code carries exactly the bytes
//! given: the `qrcode` crate's automatic segmentation may pick Kanji mode for UTF-8 byte pairs that
//! look like Shift-JIS, and decoders would then hand back other bytes. Configs are mostly
//! lower-case base64, where numeric and alphanumeric segments would save almost nothing anyway.
//! Non-ASCII text gets an ECI designator for UTF-8 as well: without one, decoders guess the
//! charset, and zbar reads a lone "é" as Shift-JIS. ASCII text (every normal config) goes without,
//! so it stays the plainest code any reader can handle.

use qrcode::bits::Bits;
use qrcode::{Color, EcLevel, QrCode, Version};

/// Error correction level L (7 % recovery), as `qrencode` (and so PiVPN and the WireGuard docs)
/// uses by default. A code on a screen is not smudged or torn, and L keeps a ~400-byte config at
/// version 13 (69 modules), which fits an 80-column terminal with its quiet zone; at M it would be
/// version 15 (77 modules), too wide for 80 columns and with smaller modules on a phone screen.
const EC_LEVEL: EcLevel = EcLevel::L;

/// Byte-mode capacity of version 40 at level L, the largest QR code there is (for non-ASCII
/// text the ECI designator takes one byte of it).
pub const MAX_BYTES: usize = 2953;

/// ECI assignment number of UTF-8.
const ECI_UTF8: u32 = 26;

/// Quiet zone, in modules, the QR specification's minimum.
const QUIET_ZONE: usize = 4;

/// Quiet zone of the terminal rendering: 2 modules (painted light, so the dark terminal background
/// stays clear of the code) keep a version-14 code (up to 458 bytes) within 80 columns, and
/// phone scanners read it reliably.
const ANSI_QUIET_ZONE: usize = 2;

/// Pixels per module in PNG output: large enough to scan from a screen without scaling.
const PNG_MODULE_PX: usize = 8;

/// Output formats for `wgadm peer qr --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QrFormat {
    /// UTF-8 half blocks with ANSI colours, for a terminal.
    Ansi,
    /// 8-bit grayscale PNG image.
    Png,
    /// Standalone SVG document.
    Svg,
}

/// Why a QR code could not be made. Never carries the text itself: it holds a private key.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The text does not fit in the largest QR code.
    #[error(
        "text is {len} bytes, more than the {max} bytes a QR code can hold (version 40, level L)"
    )]
    TooLong {
        /// Length of the text in bytes.
        len: usize,
        /// Largest length a QR code can hold.
        max: usize,
    },
    /// The QR encoder failed for another reason (not expected for byte-mode data).
    #[error("cannot encode QR code: {0}")]
    Encode(#[source] qrcode::types::QrError),
    /// Writing the PNG failed.
    #[error("cannot write PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// Renders `text` as a QR code in the given format.
///
/// - `Ansi`: UTF-8 half-block characters (two module rows per line), forced black on white so it
///   scans from dark terminals, with a 2-module quiet zone; every line resets colours and ends in
///   `"\n"`.
/// - `Png`: 8-bit grayscale, 8 pixels per module, 4-module quiet zone.
/// - `Svg`: a standalone SVG document, 8 units per module, 4-module quiet zone.
///
/// # Errors
/// [`QrError::TooLong`] if `text` exceeds [`MAX_BYTES`]; [`QrError::Png`] if PNG encoding fails.
pub fn render(text: &str, format: QrFormat) -> Result<Vec<u8>, QrError> {
    let code = encode(text.as_bytes())?;
    match format {
        QrFormat::Ansi => Ok(ansi(&code).into_bytes()),
        QrFormat::Png => png(&code),
        QrFormat::Svg => Ok(svg(&code).into_bytes()),
    }
}

/// Encodes `data` as one byte-mode segment in the smallest version that holds it.
fn encode(data: &[u8]) -> Result<QrCode, QrError> {
    let max = if data.is_ascii() {
        MAX_BYTES
    } else {
        MAX_BYTES - 1
    };
    let too_long = QrError::TooLong {
        len: data.len(),
        max,
    };
    if data.len() > max {
        return Err(too_long);
    }
    for v in 1..=40 {
        let mut bits = Bits::new(Version::Normal(v));
        // These fail only with DataTooLong when this version is too small: try the next.
        let fits = (data.is_ascii() || bits.push_eci_designator(ECI_UTF8).is_ok())
            && bits.push_byte_data(data).is_ok()
            && bits.push_terminator(EC_LEVEL).is_ok();
        if fits {
            return QrCode::with_bits(bits, EC_LEVEL).map_err(QrError::Encode);
        }
    }
    Err(too_long)
}

/// Module grid with a light quiet zone of `qz` modules around it, row-major.
fn grid(code: &QrCode, qz: usize) -> (usize, Vec<bool>) {
    let w = code.width();
    let size = w + 2 * qz;
    let mut dark = vec![false; size * size];
    for (i, c) in code.to_colors().into_iter().enumerate() {
        dark[(i / w + qz) * size + i % w + qz] = c == Color::Dark;
    }
    (size, dark)
}

fn ansi(code: &QrCode) -> String {
    // 256-colour cube entries 16 (#000000) and 231 (#ffffff): unlike the 16 basic colours,
    // terminal themes (Solarized, etc.) do not remap them, so contrast is guaranteed.
    const START: &str = "\x1b[38;5;16;48;5;231m";
    const RESET: &str = "\x1b[0m";
    let (size, dark) = grid(code, ANSI_QUIET_ZONE);
    let mut out = String::with_capacity(size.div_ceil(2) * (size * 3 + START.len() + 6));
    for y in (0..size).step_by(2) {
        out.push_str(START);
        for x in 0..size {
            let top = dark[y * size + x];
            // The size is odd, so the last line's lower half is one more light row.
            let bottom = y + 1 < size && dark[(y + 1) * size + x];
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push_str(RESET);
        out.push('\n');
    }
    out
}

fn png(code: &QrCode) -> Result<Vec<u8>, QrError> {
    let (size, dark) = grid(code, QUIET_ZONE);
    let px = size * PNG_MODULE_PX;
    let mut pixels = Vec::with_capacity(px * px);
    for row in dark.chunks(size) {
        let line: Vec<u8> = row
            .iter()
            .flat_map(|&d| [if d { 0 } else { 255 }; PNG_MODULE_PX])
            .collect();
        for _ in 0..PNG_MODULE_PX {
            pixels.extend_from_slice(&line);
        }
    }
    // At most (177 + 8) * 8 = 1480 pixels a side, so the cast cannot truncate.
    let side = px as u32;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

fn svg(code: &QrCode) -> String {
    // The renderer's quiet zone for normal QR codes is 4 modules.
    code.render::<qrcode::render::svg::Color<'_>>()
        .quiet_zone(true)
        .module_dimensions(PNG_MODULE_PX as u32, PNG_MODULE_PX as u32)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[Interface]\nPrivateKey = AAAA\nAddress = 10.8.0.2/32\n";

    #[test]
    fn png_is_decodable_with_expected_size() {
        let bytes = render(TEXT, QrFormat::Png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        let code = encode(TEXT.as_bytes()).unwrap();
        let side = ((code.width() + 2 * QUIET_ZONE) * PNG_MODULE_PX) as u32;
        let mut reader = png::Decoder::new(bytes.as_slice()).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (side, side));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        let pixels = &buf[..info.buffer_size()];
        assert!(pixels.iter().all(|&p| p == 0 || p == 255));
        // The quiet zone is light and the finder pattern's corner just inside it is dark.
        let inner = QUIET_ZONE * PNG_MODULE_PX;
        assert_eq!(pixels[(inner - 1) * side as usize + inner - 1], 255);
        assert_eq!(pixels[inner * side as usize + inner], 0);
    }

    #[test]
    fn svg_is_a_document() {
        let svg = String::from_utf8(render(TEXT, QrFormat::Svg).unwrap()).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
        let side = (encode(TEXT.as_bytes()).unwrap().width() + 2 * QUIET_ZONE) * PNG_MODULE_PX;
        assert!(svg.contains(&format!("viewBox=\"0 0 {side} {side}\"")));
    }

    #[test]
    fn ansi_has_expected_lines_and_characters() {
        let out = String::from_utf8(render(TEXT, QrFormat::Ansi).unwrap()).unwrap();
        let size = encode(TEXT.as_bytes()).unwrap().width() + 2 * ANSI_QUIET_ZONE;
        assert!(out.ends_with("\x1b[0m\n"));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), size.div_ceil(2));
        for line in lines {
            let body = line
                .strip_prefix("\x1b[38;5;16;48;5;231m")
                .and_then(|l| l.strip_suffix("\x1b[0m"))
                .unwrap();
            assert_eq!(body.chars().count(), size);
            assert!(body.chars().all(|c| matches!(c, '█' | '▀' | '▄' | ' ')));
        }
        // Quiet zone: the first line is all light.
        assert!(out.lines().next().unwrap().contains(&" ".repeat(size)));
    }

    #[test]
    fn ansi_grid_matches_the_code() {
        let code = encode(TEXT.as_bytes()).unwrap();
        let (size, dark) = grid(&code, ANSI_QUIET_ZONE);
        let out = ansi(&code);
        for (y2, line) in out.lines().enumerate() {
            let body = &line["\x1b[38;5;16;48;5;231m".len()..line.len() - "\x1b[0m".len()];
            for (x, c) in body.chars().enumerate() {
                let top = dark[2 * y2 * size + x];
                let bottom = 2 * y2 + 1 < size && dark[(2 * y2 + 1) * size + x];
                assert_eq!(matches!(c, '█' | '▀'), top);
                assert_eq!(matches!(c, '█' | '▄'), bottom);
            }
        }
    }

    #[test]
    fn error_correction_is_l_and_400_bytes_fit_80_columns() {
        let code = encode(&[b'x'; 400]).unwrap();
        assert_eq!(code.error_correction_level(), EcLevel::L);
        assert_eq!(code.version(), Version::Normal(13));
        assert!(code.width() + 2 * QUIET_ZONE <= 80);
    }

    #[test]
    fn largest_text_fits_and_one_more_byte_is_too_long() {
        let max = "a".repeat(MAX_BYTES);
        assert_eq!(
            encode(max.as_bytes()).unwrap().version(),
            Version::Normal(40)
        );
        for format in [QrFormat::Ansi, QrFormat::Png, QrFormat::Svg] {
            let err = render(&format!("{max}a"), format).unwrap_err();
            assert!(
                matches!(err, QrError::TooLong { len, max: MAX_BYTES } if len == MAX_BYTES + 1)
            );
            let msg = err.to_string();
            assert!(msg.contains("2954") && msg.contains("2953"), "{msg}");
        }
        // The ECI designator costs one byte.
        let max_utf8 = format!("é{}", "a".repeat(MAX_BYTES - 3));
        assert!(encode(max_utf8.as_bytes()).is_ok());
        let err = encode(format!("{max_utf8}a").as_bytes()).err();
        assert!(
            matches!(err, Some(QrError::TooLong { len: MAX_BYTES, max }) if max == MAX_BYTES - 1)
        );
        let err = render(&"k".repeat(100_000), QrFormat::Png).unwrap_err();
        assert!(!err.to_string().contains("kkkk"));
    }

    #[test]
    fn empty_and_non_ascii_text_render() {
        for text in ["", "# café ☃ 日本\n"] {
            for format in [QrFormat::Ansi, QrFormat::Png, QrFormat::Svg] {
                assert!(!render(text, format).unwrap().is_empty());
            }
        }
    }
}
