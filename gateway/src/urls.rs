//! Percent-encoding for the URLs the gateway writes (redirects, `?next=`, S3's
//! `x-amz-copy-source`): everything but the unreserved characters and `/` is encoded.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// RFC 3986's unreserved characters, and `/` (paths and object keys keep their shape).
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// `s` with every byte outside [`PATH`] as `%XX` (UTF-8, upper-case hex).
pub fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_slashes_and_unreserved_characters() {
        assert_eq!(encode_path("a b/c+d.txt"), "a%20b/c%2Bd.txt");
        assert_eq!(
            encode_path("/nb/x/lab?a=1&b=é"),
            "/nb/x/lab%3Fa%3D1%26b%3D%C3%A9"
        );
        assert_eq!(encode_path("A-z_0.9~"), "A-z_0.9~");
    }
}
