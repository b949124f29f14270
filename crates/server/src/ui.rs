//! The dashboard's assets, embedded in the binary and served without a
//! token: `GET /ui/` (the page) and `GET /ui/{*path}` (its ES modules,
//! styles and the vendored libraries under `vendor/`). A browser asking
//! `GET /` for HTML is sent to `/ui/`; every other `GET /` is still the
//! Elasticsearch root that shippers probe.
//!
//! The page holds no data: it asks the user for a read token, keeps it in
//! `localStorage` and sends it as `Authorization: Bearer` to the documented
//! REST API (`/api/v1/*`), so anything it shows can be scripted.
//!
//! The files are taken in with `include_bytes!` from a fixed table rather
//! than rust-embed: that needs no new crate (and no proc macro or feature
//! change in the tree DataFusion shares), and the table is short. At first
//! use each file gets an ETag (the first 16 bytes of its SHA-256, in hex)
//! and a gzip copy (flate2, already in the tree); answers carry the ETag,
//! `Cache-Control: no-cache` (revalidate every time, so a new binary's
//! assets are taken at once) and honour `If-None-Match` with 304.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Every embedded file: path under `/ui/`, media type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "lib.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/lib.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/overview.js"),
    ),
    (
        "alerts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/alerts.js"),
    ),
    (
        "sql.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/sql.js"),
    ),
    (
        "model.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/model.js"),
    ),
    (
        "rules.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/rules.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/style.css"),
    ),
    (
        "vendor/uPlot.esm.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/vendor/uPlot.esm.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/vendor/uPlot.min.css"),
    ),
    (
        "vendor/htm-preact-standalone.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/vendor/htm-preact-standalone.mjs"),
    ),
    (
        "vendor/LICENSE.uPlot",
        "text/plain; charset=utf-8",
        include_bytes!("../ui/vendor/LICENSE.uPlot"),
    ),
    (
        "vendor/LICENSE.htm",
        "text/plain; charset=utf-8",
        include_bytes!("../ui/vendor/LICENSE.htm"),
    ),
    (
        "vendor/LICENSE.preact",
        "text/plain; charset=utf-8",
        include_bytes!("../ui/vendor/LICENSE.preact"),
    ),
];

/// One embedded file, ready to serve.
struct Asset {
    content_type: &'static str,
    bytes: &'static [u8],
    gzip: Vec<u8>,
    /// Quoted hex digest, without the variant suffix.
    digest: String,
}

fn assets() -> &'static BTreeMap<&'static str, Asset> {
    static ASSETS: OnceLock<BTreeMap<&'static str, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        FILES
            .iter()
            .map(|&(path, content_type, bytes)| {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                // Writing to a Vec cannot fail.
                let gzip = encoder
                    .write_all(bytes)
                    .and_then(|()| encoder.finish())
                    .unwrap_or_default();
                let digest = hex::encode(&Sha256::digest(bytes)[..16]);
                (
                    path,
                    Asset {
                        content_type,
                        bytes,
                        gzip,
                        digest,
                    },
                )
            })
            .collect()
    })
}

/// Whether `Accept-Encoding` takes gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Whether `If-None-Match` names this asset (either encoding's ETag).
fn not_modified(headers: &HeaderMap, digest: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|tag| tag == "*" || tag.split('-').next() == Some(digest))
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = assets().get(path) else {
        return (StatusCode::NOT_FOUND, "no such dashboard file\n").into_response();
    };
    let gzip = accepts_gzip(headers) && asset.gzip.len() < asset.bytes.len();
    // Each encoding is its own representation, so its own strong ETag.
    let etag = if gzip {
        format!("\"{}-gzip\"", asset.digest)
    } else {
        format!("\"{}\"", asset.digest)
    };
    let mut response = if not_modified(headers, &asset.digest) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gzip {
        let mut response = asset.gzip.clone().into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        asset.bytes.into_response()
    };
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// `GET /ui/`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{*path}`: a module, a stylesheet or a vendored file.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// Whether a `GET /` comes from a browser (it asks for HTML first), which
/// is sent to the dashboard instead of the Elasticsearch root.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `303 See Other` to the dashboard.
pub(crate) fn to_dashboard() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/")]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn every_file_is_embedded_and_the_page_loads_only_embedded_modules() {
        for (path, _, bytes) in FILES {
            assert!(!bytes.is_empty(), "{path} is empty");
        }
        let page = std::str::from_utf8(assets()["index.html"].bytes).unwrap();
        let app = std::str::from_utf8(assets()["app.js"].bytes).unwrap();
        for text in [page, app] {
            for reference in text
                .split(['"', '\''])
                .filter(|piece| piece.starts_with("/ui/"))
            {
                let path = reference.trim_start_matches("/ui/");
                assert!(
                    path.is_empty() || assets().contains_key(path),
                    "{reference} is referenced but not embedded"
                );
            }
        }
    }

    #[test]
    fn gzip_when_accepted_and_304_for_either_etag() {
        let plain = serve("app.js", &HeaderMap::new());
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let etag = plain.headers()[header::ETAG].to_str().unwrap().to_string();
        let zipped = serve("app.js", &headers(&[("accept-encoding", "br, gzip;q=0.8")]));
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        let zipped_etag = zipped.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_ne!(etag, zipped_etag);
        let refused = serve("app.js", &headers(&[("accept-encoding", "gzip;q=0")]));
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
        for tag in [etag, zipped_etag] {
            let mut map = HeaderMap::new();
            map.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&tag).unwrap());
            assert_eq!(serve("app.js", &map).status(), StatusCode::NOT_MODIFIED);
        }
        let stale = serve("app.js", &headers(&[("if-none-match", "\"0123\"")]));
        assert_eq!(stale.status(), StatusCode::OK);
        assert_eq!(
            serve("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
