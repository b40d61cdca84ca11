//! Decodes rendered QR codes with the real `zbarimg` (zbar-tools, installed by scripts/setup.sh)
//! and checks it gets back exactly the text, byte for byte.
//!
//! zbarimg here cannot read SVG (its ImageMagick has no SVG delegate), so the SVG and ANSI
//! renderings are turned back into module grids and rasterised to PNG for zbarimg: this checks
//! their geometry (orientation, dark/light, half-block order), not a terminal's or browser's
//! rendering.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use wgadm::qr::{render, QrFormat};

/// Runs zbarimg on `path` and returns the raw decoded bytes.
///
/// `--oneshot` stops at the first code and, unlike the default mode, appends no newline.
/// `-Sbinary` turns off zbar's charset guessing, which without an ECI designator re-encodes
/// short non-ASCII data it takes for Shift-JIS. `--nodbus` silences "Connection Error" noise
/// when there is no D-Bus.
fn zbarimg(path: &Path) -> Vec<u8> {
    zbarimg_with(path, &["-Sbinary"])
}

fn zbarimg_with(path: &Path, extra: &[&str]) -> Vec<u8> {
    let out = Command::new("zbarimg")
        .args(["--nodbus", "--raw", "-q", "--oneshot"])
        .args(extra)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run zbarimg ({e}): run scripts/setup.sh"));
    assert!(
        out.status.success(),
        "zbarimg failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Made-up 32-byte key, base64 like a WireGuard key (xorshift from `seed`, not a real key).
fn fake_key(seed: u64) -> String {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..32)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn client_config() -> String {
    format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.8.0.2/32, fd08::2/128\nDNS = 1.1.1.1, 9.9.9.9\n\n\
         [Peer]\nPublicKey = {}\nPresharedKey = {}\nEndpoint = vpn.example.com:51820\n\
         AllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n",
        fake_key(0x9e37_79b9_7f4a_7c15),
        fake_key(0xbf58_476d_1ce4_e5b9),
        fake_key(0x94d0_49bb_1331_11eb),
    )
}

/// Writes a module grid as a grayscale PNG, 4 pixels per module, plus a 4-module light border.
fn grid_png(path: &Path, grid: &[Vec<bool>]) {
    const PX: usize = 4;
    let width = grid.iter().map(Vec::len).max().unwrap_or(0) + 8;
    let mut rows = vec![vec![false; width]; 4];
    rows.extend(grid.iter().map(|r| {
        let mut row = vec![false; 4];
        row.extend(r);
        row.resize(width, false);
        row
    }));
    rows.extend(vec![vec![false; width]; 4]);
    let mut pixels = Vec::new();
    for row in &rows {
        let line: Vec<u8> = row
            .iter()
            .flat_map(|&d| [if d { 0 } else { 255 }; PX])
            .collect();
        for _ in 0..PX {
            pixels.extend_from_slice(&line);
        }
    }
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, (width * PX) as u32, (rows.len() * PX) as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
}

fn decode_png(text: &str, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("peer.png");
    std::fs::write(&path, render(text, QrFormat::Png).unwrap()).unwrap();
    zbarimg_with(&path, extra)
}

#[test]
fn png_of_client_config_decodes_to_the_exact_text() {
    let config = client_config();
    assert!((300..500).contains(&config.len()), "{}", config.len());
    assert_eq!(
        String::from_utf8(decode_png(&config, &["-Sbinary"])).unwrap(),
        config
    );
}

#[test]
fn png_keeps_non_ascii_and_edge_bytes_exact() {
    for text in [
        "é",
        "# café ☃ 日本語\r\nｱｲｳ\n",
        "no newline at end",
        "\n\n",
        " ",
    ] {
        assert_eq!(decode_png(text, &["-Sbinary"]), text.as_bytes(), "{text:?}");
        // The UTF-8 ECI designator lets a charset-guessing reader get it right too.
        assert_eq!(
            decode_png(text, &[]),
            text.as_bytes(),
            "{text:?} without -Sbinary"
        );
    }
}

#[test]
fn ansi_grid_decodes_to_the_exact_text() {
    let config = client_config();
    let ansi = String::from_utf8(render(&config, QrFormat::Ansi).unwrap()).unwrap();
    let mut grid = Vec::new();
    for line in ansi.lines() {
        let body = line
            .strip_prefix("\x1b[38;5;16;48;5;231m")
            .and_then(|l| l.strip_suffix("\x1b[0m"))
            .unwrap_or_else(|| panic!("unexpected escapes in {line:?}"));
        grid.push(body.chars().map(|c| matches!(c, '█' | '▀')).collect());
        grid.push(body.chars().map(|c| matches!(c, '█' | '▄')).collect());
    }
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("ansi.png");
    grid_png(&path, &grid);
    assert_eq!(String::from_utf8(zbarimg(&path)).unwrap(), config);
}

#[test]
fn svg_path_decodes_to_the_exact_text() {
    let config = client_config();
    let svg = String::from_utf8(render(&config, QrFormat::Svg).unwrap()).unwrap();
    // The qrcode crate draws every dark run as "M{x} {y}h{w}v{h}H{x}V{y}", in SVG units.
    let d = svg
        .split(" d=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let unit = 8;
    let side: usize = svg
        .split("width=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut grid = vec![vec![false; side / unit]; side / unit];
    for rect in d.split('M').filter(|r| !r.is_empty()) {
        let n: Vec<usize> = rect
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let (x, y, w, h) = (n[0] / unit, n[1] / unit, n[2] / unit, n[3] / unit);
        for row in &mut grid[y..y + h] {
            row[x..x + w].fill(true);
        }
    }
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("svg.png");
    grid_png(&path, &grid);
    assert_eq!(String::from_utf8(zbarimg(&path)).unwrap(), config);
}
