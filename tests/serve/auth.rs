//! `--api-key`: every API route needs it (three ways to send it), the page, probes and
//! outputs do not; listening beyond loopback needs a key or --insecure-no-auth.

use std::process::Command;

use super::common::{bin, small_job, Server};

#[test]
fn api_key_is_required_when_set() {
    let server = Server::start(&["--api-key", "s3cret"]);
    let no_key = server.get("/api/info");
    assert_eq!(no_key.status, 401);
    assert_eq!(no_key.header("www-authenticate"), Some("Bearer"));
    assert!(no_key.message().contains("needs an API key"), "{}", no_key.text());
    let wrong = server.request("GET", "/api/info", &[("Authorization", "Bearer s3cres")], None);
    assert_eq!(wrong.status, 401);
    assert!(wrong.message().contains("wrong"));
    for headers in [[("Authorization", "Bearer s3cret")], [("X-API-Key", "s3cret")]] {
        assert_eq!(server.request("GET", "/api/info", &headers, None).status, 200);
    }
    assert_eq!(server.get("/api/info?api_key=s3cret").status, 200);
    // Generation and operations too; probes do not.
    let post = server.post("/api/jobs", &small_job("a red circle", 1, 4));
    assert_eq!(post.status, 401);
    for path in ["/metrics", "/openapi.json", "/sdapi/v1/samplers", "/v1/models"] {
        assert_eq!(server.get(path).status, 401, "{path}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(server.get(path).status, 200, "{path}");
    }
    // Outputs are reachable by their (unguessable) job id alone.
    let headers = [
        ("Authorization", "Bearer s3cret"),
        ("Content-Type", "application/json"),
    ];
    let body = small_job("a red circle", 1, 4).to_string().into_bytes();
    let job = server.request("POST", "/api/jobs?wait=true", &headers, Some(body));
    assert_eq!(job.status, 200, "{}", job.text());
    let url = job.json()["results"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(server.get(&url).status, 200);
}

#[test]
fn beyond_loopback_needs_a_key() {
    let out = Command::new(bin())
        .args(["serve", "--host", "0.0.0.0", "--port", "0", "--backend", "cpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--host") && err.contains("--api-key") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing served");
}
