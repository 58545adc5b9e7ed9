//! Rendering a QR payload as a PNG data URL for the Portal's `<img>`.

use base64::Engine;
use qrcode::{Color, QrCode};

/// Pixels per QR module.
const SCALE: usize = 8;
/// White modules around the code, as the QR standard asks.
const QUIET_ZONE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the QR payload cannot be encoded: {0}")]
    Encode(#[source] qrcode::types::QrError),
    #[error("PNG encoding failed: {0}")]
    Png(#[source] png::EncodingError),
    #[error("PNG encoding failed: {0}")]
    Size(#[source] std::num::TryFromIntError),
}

pub fn png_data_url(payload: &str) -> Result<String, QrError> {
    let code = QrCode::new(payload.as_bytes()).map_err(QrError::Encode)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET_ZONE, i / modules + QUIET_ZONE);
        for y in my * SCALE..(my + 1) * SCALE {
            pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
        }
    }
    let mut png_bytes = Vec::new();
    {
        let side = u32::try_from(side).map_err(QrError::Size)?;
        let mut encoder = png::Encoder::new(&mut png_bytes, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(QrError::Png)?;
        writer.write_image_data(&pixels).map_err(QrError::Png)?;
    }
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png_bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_decodable_png_of_the_right_size() {
        let url = png_data_url("2@abcdef,ghijkl,mnopqr,stuvwx").unwrap();
        let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!(info.width, info.height);
        assert_eq!(info.width as usize % SCALE, 0);
        assert!(info.width as usize >= (21 + 2 * QUIET_ZONE) * SCALE);
    }
}
