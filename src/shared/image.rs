//! A picture a customer shows with a question: a screenshot of an error page, a
//! photo of a damaged parcel. It arrives as OpenAI's `image_url` content part
//! and goes to each provider in that provider's own form.

use serde::{Deserialize, Serialize};

crate::spelled! {
    /// The image formats every provider takes (Anthropic's list; OpenAI takes
    /// the same four).
    pub enum ImageType {
        /// PNG.
        Png => "image/png",
        /// JPEG.
        Jpeg => "image/jpeg",
        /// GIF (the first frame).
        Gif => "image/gif",
        /// WebP.
        Webp => "image/webp",
    }
}

impl ImageType {
    /// The format `bytes` are in, read from their first bytes (what a provider
    /// trusts, whatever a data URL declares).
    pub fn sniff(bytes: &[u8]) -> Option<ImageType> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageType::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageType::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(ImageType::Gif)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(ImageType::Webp)
        } else {
            None
        }
    }
}

crate::spelled! {
    /// How closely the model should look (OpenAI's `detail`); Anthropic has no
    /// such choice and looks at the picture as it is.
    pub enum ImageDetail {
        /// The model decides.
        Auto => "auto",
        /// A small version: cheaper, enough for a photo of a parcel.
        Low => "low",
        /// The full picture: small print on a screenshot.
        High => "high",
    }
}

/// Where an image is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// An `http(s)` address the provider fetches it from.
    Url {
        /// The address.
        url: String,
    },
    /// The image itself, as the caller sent it in a data URL.
    Data {
        /// Its format, as its bytes show it.
        media_type: ImageType,
        /// Its bytes in standard base64, checked to decode.
        base64: String,
    },
}

/// An image of a turn, and where in the turn's text it was shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Where it is.
    pub source: ImageSource,
    /// How closely to look, when the caller said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
    /// The byte offset in the turn's text where it appeared: the text before it
    /// was shown first. Parts keep their order this way while the text stays
    /// one string for everything that reads only text.
    pub at: usize,
}

impl Image {
    /// A rough count of the prompt tokens an image costs, for estimates where
    /// the provider reports none: OpenAI's price of a low-detail image, and of a
    /// 1024-pixel square otherwise (Anthropic charges about the same for it).
    pub fn estimated_tokens(&self) -> u64 {
        match self.detail {
            Some(ImageDetail::Low) => 85,
            _ => 765,
        }
    }

    /// The image as a URL: the web address, or a data URL of its bytes.
    pub fn url(&self) -> String {
        match &self.source {
            ImageSource::Url { url } => url.clone(),
            ImageSource::Data { media_type, base64 } => {
                format!("data:{};base64,{base64}", media_type.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_from_their_first_bytes() {
        assert_eq!(
            ImageType::sniff(b"\x89PNG\r\n\x1a\n\0\0"),
            Some(ImageType::Png)
        );
        assert_eq!(
            ImageType::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageType::Jpeg)
        );
        assert_eq!(ImageType::sniff(b"GIF89a.."), Some(ImageType::Gif));
        assert_eq!(
            ImageType::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageType::Webp)
        );
        // A RIFF that is not WebP (a WAV file), a BMP, and too little to tell.
        assert_eq!(ImageType::sniff(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(ImageType::sniff(b"BM\0\0\0\0"), None);
        assert_eq!(ImageType::sniff(b"\x89PN"), None);
    }
}
