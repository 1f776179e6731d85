//! Reading an `image_url` content part: a web address or a data URL, checked
//! here so that no provider refuses it later. A provider's refusal of a broken
//! image would reach the customer as that provider's 400, or worse, pass the
//! provider by while the next one refuses it too; the caller hears at once what
//! is wrong with which part.

use super::super::error::ApiError;
use crate::shared::{Image, ImageDetail, ImageSource, ImageType};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::Value;

/// Most images in one request: Anthropic's limit per request (OpenAI takes more).
pub(super) const MAX_IMAGES: usize = 100;

/// Refuses a request whose turns show more than [`MAX_IMAGES`] images,
/// naming `param` (`messages`, `input`), where the caller sent them.
pub(super) fn refuse_too_many(
    turns: &[crate::shared::ChatTurn],
    param: &str,
) -> Result<(), ApiError> {
    let images: usize = turns.iter().map(|t| t.images.len()).sum();
    if images > MAX_IMAGES {
        return Err(invalid(
            param,
            format!(
                "{param} show {images} images; providers take at most {MAX_IMAGES} in one request"
            ),
        ));
    }
    Ok(())
}

/// Largest image, as base64 text: Anthropic refuses an image over 5 MB.
const MAX_BASE64: usize = 5 << 20;

/// Longest web address taken for an image.
const MAX_URL: usize = 8 << 10;

/// Standard base64, with or without its padding: some encoders leave it out.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::invalid(Some(param), message)
}

/// The image of part `param` (`messages[i].content[n]`), shown after `at`
/// bytes of its turn's text: Chat Completions' `{"image_url": {"url", "detail"}}`.
pub(super) fn read(part: &Value, param: &str, at: usize) -> Result<Image, ApiError> {
    let spec = part
        .get("image_url")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            invalid(
                &format!("{param}.image_url"),
                format!("{param}.image_url must be an object with a url"),
            )
        })?;
    image(
        (spec.get("url"), &format!("{param}.image_url.url")),
        (spec.get("detail"), &format!("{param}.image_url.detail")),
        at,
    )
}

/// An image from its `url` and `detail` fields, each with the parameter that
/// names it in an error: the Responses API puts them on the part itself.
pub(super) fn image(
    (url, url_param): (Option<&Value>, &str),
    (detail, detail_param): (Option<&Value>, &str),
    at: usize,
) -> Result<Image, ApiError> {
    let url = url
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(url_param, format!("{url_param} must be a string")))?;
    let detail = match detail {
        None | Some(Value::Null) => None,
        Some(detail) => Some(
            detail
                .as_str()
                .and_then(|d| d.parse::<ImageDetail>().ok())
                .ok_or_else(|| {
                    invalid(
                        detail_param,
                        format!("{detail_param} must be \"auto\", \"low\" or \"high\""),
                    )
                })?,
        ),
    };
    let source = source(url).map_err(|why| invalid(url_param, format!("{url_param}: {why}")))?;
    Ok(Image { source, detail, at })
}

/// Where the image is, or why `url` names none a provider would take.
fn source(url: &str) -> Result<ImageSource, String> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("data") => data(url),
        Some("http" | "https") => {
            if url.len() > MAX_URL {
                return Err(format!("a web address of at most {MAX_URL} bytes is taken"));
            }
            match reqwest::Url::parse(url) {
                Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => {
                    Ok(ImageSource::Url {
                        url: parsed.to_string(),
                    })
                }
                _ => Err("not a valid web address".into()),
            }
        }
        _ => Err("must be an http(s) address or a data URL (data:image/png;base64,…)".into()),
    }
}

/// An image sent inline: `data:image/<type>;base64,<bytes>`.
fn data(url: &str) -> Result<ImageSource, String> {
    let (head, payload) = url
        .split_once(',')
        .ok_or("a data URL needs a comma before its data")?;
    let head = head.to_ascii_lowercase();
    let Some(declared) = head
        .strip_prefix("data:")
        .and_then(|h| h.strip_suffix(";base64"))
    else {
        return Err("a data URL must be base64 (data:image/png;base64,…)".into());
    };
    if !declared.starts_with("image/") {
        return Err(format!("a data URL of {declared:?} is not an image"));
    }
    if payload.len() > MAX_BASE64 {
        return Err(format!(
            "the image is {} bytes of base64; providers take at most {MAX_BASE64}",
            payload.len()
        ));
    }
    let sniffed =
        sniff_base64(payload).map_err(|err| format!("the data is not valid base64 ({err})"))?;
    // The bytes decide: a provider checks them, not the declared type.
    let media_type = sniffed.ok_or_else(|| {
        format!("the data is not a PNG, JPEG, GIF or WebP image (declared {declared})")
    })?;
    // Sent padded, as every provider takes it: what decoded unpadded is the
    // same text with its `=` put back.
    let mut base64 = String::with_capacity(payload.len() + 3);
    base64.push_str(payload);
    base64.extend(std::iter::repeat_n('=', (4 - payload.len() % 4) % 4));
    Ok(ImageSource::Data { media_type, base64 })
}

/// Base64 text decoded this many characters at a time: a multiple of 4, so
/// each piece decodes on its own.
const PIECE: usize = 4 << 10;

/// The type of the image base64 `payload` holds, once every piece of it is
/// known to decode. Piece by piece into one small buffer: the decoded image
/// (megabytes for a screenshot) is never needed whole.
fn sniff_base64(payload: &str) -> Result<Option<ImageType>, base64::DecodeSliceError> {
    let mut buffer = [0u8; PIECE / 4 * 3];
    let mut sniffed = None;
    let mut pieces = payload.as_bytes().chunks(PIECE).peekable();
    let mut first = true;
    while let Some(piece) = pieces.next() {
        // Only the whole text may end in padding.
        if pieces.peek().is_some() && piece.contains(&b'=') {
            return Err(base64::DecodeError::InvalidPadding.into());
        }
        let decoded = LENIENT.decode_slice(piece, &mut buffer)?;
        if first {
            sniffed = ImageType::sniff(&buffer[..decoded]);
            first = false;
        }
    }
    Ok(sniffed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose;
    use serde_json::json;

    /// The smallest PNG file's first bytes, then some.
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    fn part(url: &str) -> Value {
        json!({"type": "image_url", "image_url": {"url": url}})
    }

    fn message(part: &Value) -> String {
        read(part, "messages[0].content[1]", 0).unwrap_err().message
    }

    #[test]
    fn a_data_url_keeps_its_bytes_under_the_type_they_show() {
        let base64 = general_purpose::STANDARD.encode(PNG);
        // Declared JPEG, but the bytes are a PNG: providers would check them.
        let image = read(&part(&format!("data:image/jpeg;base64,{base64}")), "p", 7).unwrap();
        assert_eq!(
            image.source,
            ImageSource::Data {
                media_type: ImageType::Png,
                base64: base64.clone()
            }
        );
        assert_eq!(image.at, 7);
        assert_eq!(image.url(), format!("data:image/png;base64,{base64}"));
        // Unpadded base64 is taken and sent padded.
        let unpadded = base64.trim_end_matches('=');
        assert_ne!(unpadded, base64);
        let image = read(&part(&format!("DATA:image/png;base64,{unpadded}")), "p", 0).unwrap();
        assert!(matches!(image.source, ImageSource::Data { base64: b, .. } if b == base64));
    }

    #[test]
    fn a_large_image_is_checked_piece_by_piece_as_one_text() {
        let mut bytes = PNG.to_vec();
        bytes.extend((0..3 * PIECE).map(|i| (i % 251) as u8));
        let base64 = general_purpose::STANDARD.encode(&bytes);
        let image = read(&part(&format!("data:image/png;base64,{base64}")), "p", 0).unwrap();
        assert!(matches!(image.source, ImageSource::Data { base64: b, .. } if b == base64));
        // Padding that ends a piece but not the text is not base64, as a whole
        // decode says too.
        let mut split = base64[..PIECE - 1].to_string();
        split.push('=');
        split.push_str(&base64[PIECE..]);
        assert!(general_purpose::STANDARD.decode(&split).is_err());
        let err = read(&part(&format!("data:image/png;base64,{split}")), "p", 0).unwrap_err();
        assert!(err.message.contains("not valid base64"), "{}", err.message);
        // A bad character deep in the text is found.
        let mut bad = base64.clone();
        bad.replace_range(2 * PIECE + 5..2 * PIECE + 6, "!");
        let err = read(&part(&format!("data:image/png;base64,{bad}")), "p", 0).unwrap_err();
        assert!(err.message.contains("not valid base64"), "{}", err.message);
    }

    #[test]
    fn a_web_address_and_a_detail_are_taken() {
        let image = read(
            &json!({"type": "image_url", "image_url": {"url": "https://shop.example/a.png", "detail": "low"}}),
            "p",
            0,
        )
        .unwrap();
        assert_eq!(
            image.source,
            ImageSource::Url {
                url: "https://shop.example/a.png".into()
            }
        );
        assert_eq!(image.detail, Some(ImageDetail::Low));
    }

    #[test]
    fn what_no_provider_takes_is_refused_naming_the_part() {
        let not_image = general_purpose::STANDARD.encode(b"BM\0\0 a bitmap");
        let cases = [
            (
                part("ftp://shop.example/a.png"),
                "http(s) address or a data URL",
            ),
            (part("https://"), "not a valid web address"),
            (part("data:image/png,rawbytes"), "must be base64"),
            (part("data:text/plain;base64,aGk="), "is not an image"),
            (
                part("data:image/png;base64,not base64!"),
                "not valid base64",
            ),
            (
                part(&format!("data:image/bmp;base64,{not_image}")),
                "not a PNG, JPEG, GIF or WebP image",
            ),
            (
                part(&format!(
                    "data:image/png;base64,{}",
                    "A".repeat(MAX_BASE64 + 4)
                )),
                "providers take at most",
            ),
            (
                json!({"type": "image_url", "image_url": "https://shop.example/a.png"}),
                "must be an object",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "https://shop.example/a.png", "detail": "ultra"}}),
                "\"auto\", \"low\" or \"high\"",
            ),
        ];
        for (part, expected) in cases {
            let message = message(&part);
            assert!(message.contains(expected), "{message}");
            assert!(message.starts_with("messages[0].content[1]"), "{message}");
        }
    }
}
