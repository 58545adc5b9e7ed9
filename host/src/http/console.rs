//! The operator console at `/console`: static files from `host/console/`,
//! embedded in the binary, so running lila needs no Node.js and no other server.
//!
//! The console is plain HTML, CSS and ES modules with no build step. It only
//! calls the same `/api` as the Portal, with the token the operator typed,
//! so it can never do what the API forbids. The pages carry a strict
//! Content-Security-Policy: scripts and styles only from this origin, no
//! inline script, and images from this origin or `data:` (the API's QR PNG).

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiError;

/// The policy every console response carries. `img-src data:` is for the
/// QR code, which `GET /api/sessions/{phone}/qr` returns as a PNG data URL.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: the name it is served under and its content type.
struct ConsoleFile {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: ConsoleFile = ConsoleFile {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../console/index.html"),
};

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// An ES module of the console, embedded from `host/console/`.
macro_rules! module {
    ($name:literal) => {
        ConsoleFile {
            name: $name,
            content_type: JAVASCRIPT,
            body: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

/// Every asset under `/console/{name}`. A name not listed is a 404: nothing
/// is ever read from disk, so no path can reach outside this list.
const ASSETS: &[ConsoleFile] = &[
    INDEX,
    module!("app.js"),
    module!("api.js"),
    module!("dom.js"),
    module!("events.js"),
    module!("poll.js"),
    module!("qr.js"),
    module!("metrics.js"),
    module!("sessions.js"),
    module!("session.js"),
    module!("plugins.js"),
    module!("health.js"),
    ConsoleFile {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/style.css"),
    },
    ConsoleFile {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../console/icon.svg"),
    },
];

/// The console's routes; `http::router` merges them beside `/api`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{name}", get(asset))
}

async fn index() -> Response {
    serve(&INDEX)
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|file| file.name == name)
        .map(serve)
        .ok_or_else(|| ApiError::NotFound("no such file in the console".into()))
}

fn serve(file: &ConsoleFile) -> Response {
    (
        [
            (header::CONTENT_TYPE, file.content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The token never goes in a URL, but no page address leaks either.
            (header::REFERRER_POLICY, "no-referrer"),
            // The files change with the binary; revalidating costs little.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        file.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn check(path: &str, content_type: &str) -> impl Future<Output = ()> {
        let (path, content_type) = (path.to_owned(), content_type.to_owned());
        async move {
            let response = get(&path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header_of(&response, header::CONTENT_TYPE),
                content_type,
                "{path}"
            );
            assert_eq!(
                header_of(&response, header::CONTENT_SECURITY_POLICY),
                CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(
                header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
                "nosniff"
            );
            assert!(!body_text(response).await.is_empty(), "{path} is empty");
        }
    }

    #[tokio::test]
    async fn every_file_is_served_with_its_content_type_and_the_policy() {
        check("/console", "text/html; charset=utf-8").await;
        check("/console/", "text/html; charset=utf-8").await;
        check("/console/index.html", "text/html; charset=utf-8").await;
        let modules = [
            "app.js",
            "api.js",
            "dom.js",
            "events.js",
            "poll.js",
            "qr.js",
            "metrics.js",
            "sessions.js",
            "session.js",
            "plugins.js",
            "health.js",
        ];
        for module in modules {
            check(&format!("/console/{module}"), JAVASCRIPT).await;
        }
        check("/console/style.css", "text/css; charset=utf-8").await;
        check("/console/icon.svg", "image/svg+xml").await;
    }

    #[tokio::test]
    async fn an_unknown_file_is_a_json_404_and_no_path_reaches_the_disk() {
        for path in [
            "/console/nope.js",
            "/console/..%2FCargo.toml",
            "/console/%2E%2E%2Fsrc%2Flib.rs",
            "/console/app.js.map",
            "/console/a/b",
        ] {
            let response = get(path).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            if path != "/console/a/b" {
                let body = body_text(response).await;
                assert!(body.contains("no such file in the console"), "{body}");
            }
        }
    }

    /// A file added to `host/console/` but not to `ASSETS` would be a 404 in
    /// the browser (a module that fails to import breaks the whole page).
    #[test]
    fn every_file_of_the_console_folder_is_served() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|f| f.name.to_owned()).collect();
        served.sort();
        assert_eq!(on_disk, served);
    }

    #[test]
    fn the_policy_allows_no_inline_script_and_nothing_from_elsewhere() {
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self'"));
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-eval"));
        assert!(!CONTENT_SECURITY_POLICY.contains("http"));
    }

    /// The page loads its scripts as modules from files (the policy forbids
    /// inline ones) and nothing from another origin.
    #[test]
    fn the_page_has_no_inline_script_and_no_outside_address() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src=\"/console/"), "inline script: {tag}");
            assert!(script[script.find('>').unwrap() + 1..].starts_with("</script>"));
        }
        for file in ASSETS {
            // An SVG file names its XML namespace, which is never fetched.
            let text = std::str::from_utf8(file.body)
                .unwrap()
                .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!text.contains("http://"), "{} names http://", file.name);
            assert!(!text.contains("https://"), "{} names https://", file.name);
            assert!(
                !text.contains(" style=\""),
                "{} has an inline style",
                file.name
            );
            assert!(
                !text.contains(" onclick="),
                "{} has an inline handler",
                file.name
            );
        }
    }
}
