//! Webhook signatures: HMAC-SHA256 as GitHub sends it (`X-Hub-Signature-256`)
//! and as the Standard Webhooks spec defines it (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`). Every comparison is constant-time
//! (`Mac::verify_slice`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A checked signing secret and how requests carry their signature.
#[derive(Clone)]
pub enum Verifier {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, keyed by the
    /// secret's bytes as given.
    Github { key: Vec<u8> },
    /// Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256 of
    /// "{webhook-id}.{webhook-timestamp}.{body}">` (several, space-separated),
    /// keyed by the base64-decoded secret (`whsec_` prefix optional), the
    /// timestamp within `tolerance_secs` of now.
    Standard { key: Vec<u8>, tolerance_secs: i64 },
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str(match self {
            Self::Github { .. } => "Verifier::Github",
            Self::Standard { .. } => "Verifier::Standard",
        })
    }
}

/// The key of a Standard Webhooks secret (`whsec_<base64>`).
pub fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .trim()
        .strip_prefix("whsec_")
        .unwrap_or(secret.trim());
    match BASE64.decode(b64) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("the secret is empty".into()),
        Err(e) => Err(format!(
            "a Standard Webhooks secret is `whsec_` and base64; this one is not base64: {e}"
        )),
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, String> {
    headers
        .get(name)
        .ok_or_else(|| format!("the {name} header is missing"))?
        .to_str()
        .map_err(|_| format!("the {name} header is not text"))
}

impl Verifier {
    /// `Ok` when `body` carries a valid signature; else why not (for a 401).
    /// `now` is the current Unix time in seconds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
        match self {
            Self::Github { key } => {
                const NAME: &str = "x-hub-signature-256";
                let given = header(headers, NAME)?;
                let hex_sig = given
                    .trim()
                    .strip_prefix("sha256=")
                    .ok_or_else(|| format!("the {NAME} header does not start with sha256="))?;
                let sig = hex::decode(hex_sig)
                    .map_err(|_| format!("the {NAME} header's signature is not hex"))?;
                let mut m = mac(key);
                m.update(body);
                m.verify_slice(&sig)
                    .map_err(|_| format!("the {NAME} signature does not match the body"))
            }
            Self::Standard {
                key,
                tolerance_secs,
            } => {
                let id = header(headers, "webhook-id")?;
                let ts = header(headers, "webhook-timestamp")?;
                let sigs = header(headers, "webhook-signature")?;
                let at: i64 = ts.trim().parse().map_err(|_| {
                    format!("the webhook-timestamp header {ts:?} is not Unix seconds")
                })?;
                if (now - at).abs() > *tolerance_secs {
                    return Err(format!(
                        "the webhook-timestamp {at} is more than {tolerance_secs}s from now ({now}): too old or too new, refused as a possible replay"
                    ));
                }
                let mut m = mac(key);
                m.update(id.as_bytes());
                m.update(b".");
                m.update(ts.as_bytes());
                m.update(b".");
                m.update(body);
                let mut v1 = 0;
                for candidate in sigs.split_whitespace() {
                    let Some(b64) = candidate.strip_prefix("v1,") else {
                        continue;
                    };
                    v1 += 1;
                    let Ok(sig) = BASE64.decode(b64) else {
                        continue;
                    };
                    if m.clone().verify_slice(&sig).is_ok() {
                        return Ok(());
                    }
                }
                Err(if v1 == 0 {
                    "the webhook-signature header has no v1 signature".into()
                } else {
                    "no webhook-signature matches the body".into()
                })
            }
        }
    }
}

/// Sign `body` as GitHub does (for tests and examples): the header value.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Sign as Standard Webhooks does (for tests and examples): the
/// `webhook-signature` value.
pub fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(format!("{id}.{timestamp}.").as_bytes());
    m.update(body);
    format!("v1,{}", BASE64.encode(m.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// GitHub's docs ("Validating webhook deliveries"): secret "It's a Secret to
    /// Everybody", payload "Hello, World!".
    const GITHUB_EXPECTED: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_docs_example_verifies_and_a_wrong_one_does_not() {
        let secret = b"It's a Secret to Everybody";
        assert_eq!(github_signature(secret, b"Hello, World!"), GITHUB_EXPECTED);
        let v = Verifier::Github {
            key: secret.to_vec(),
        };
        let ok = headers(&[("x-hub-signature-256", GITHUB_EXPECTED)]);
        assert_eq!(v.verify(&ok, b"Hello, World!", 0), Ok(()));
        let err = v.verify(&ok, b"Hello, World?", 0).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let err = v.verify(&HeaderMap::new(), b"x", 0).unwrap_err();
        assert!(
            err.contains("x-hub-signature-256 header is missing"),
            "{err}"
        );
        let bad = headers(&[("x-hub-signature-256", "sha1=abc")]);
        assert!(v.verify(&bad, b"x", 0).unwrap_err().contains("sha256="));
        let bad = headers(&[("x-hub-signature-256", "sha256=zz")]);
        assert!(v.verify(&bad, b"x", 0).unwrap_err().contains("not hex"));
    }

    /// The Standard Webhooks spec's test vector (its reference libraries' tests).
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_spec_vector_verifies() {
        let key = standard_key(SW_SECRET).unwrap();
        assert_eq!(standard_signature(&key, SW_ID, SW_TS, SW_BODY), SW_SIG);
        let v = Verifier::Standard {
            key,
            tolerance_secs: 300,
        };
        let ts = SW_TS.to_string();
        // One of several space-separated signatures (rotation) is enough.
        let sigs = format!("v1,bm90IGl0 {SW_SIG}");
        let h = headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sigs),
        ]);
        assert_eq!(v.verify(&h, SW_BODY, SW_TS + 10), Ok(()));
        // Stale or from the future, beyond the window.
        let err = v.verify(&h, SW_BODY, SW_TS + 301).unwrap_err();
        assert!(err.contains("replay"), "{err}");
        assert!(v.verify(&h, SW_BODY, SW_TS - 301).is_err());
        // Another body, another id.
        assert!(v
            .verify(&h, br#"{"test": 1}"#, SW_TS)
            .unwrap_err()
            .contains("no webhook-signature matches"));
        let other = headers(&[
            ("webhook-id", "msg_other"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", SW_SIG),
        ]);
        assert!(v.verify(&other, SW_BODY, SW_TS).is_err());
        let missing = headers(&[("webhook-id", SW_ID), ("webhook-timestamp", &ts)]);
        assert!(v
            .verify(&missing, SW_BODY, SW_TS)
            .unwrap_err()
            .contains("webhook-signature header is missing"));
        let v2 = headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", "v2,abc"),
        ]);
        assert!(v
            .verify(&v2, SW_BODY, SW_TS)
            .unwrap_err()
            .contains("no v1 signature"));
    }

    #[test]
    fn standard_secret_must_be_base64() {
        assert!(standard_key("whsec_not base64!").is_err());
        assert!(standard_key("whsec_").is_err());
        assert_eq!(
            standard_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            standard_key(SW_SECRET).unwrap()
        );
    }
}
