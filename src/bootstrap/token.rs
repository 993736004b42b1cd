//! kubeadm bootstrap tokens: `[a-z0-9]{6}.[a-z0-9]{16}`, from the OS RNG.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

pub fn generate() -> String {
    let mut rng = rand::rngs::OsRng;
    let mut part = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let id = part(6);
    let secret = part(16);
    format!("{id}.{secret}")
}

pub fn is_valid(token: &str) -> bool {
    let Some((id, secret)) = token.split_once('.') else {
        return false;
    };
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    ok(id, 6) && ok(secret, 16)
}

/// The public half of a token (safe to show).
pub(crate) fn id(token: &str) -> &str {
    token.split('.').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format() {
        for _ in 0..100 {
            let t = generate();
            assert!(is_valid(&t), "{t}");
        }
        assert!(!is_valid("ABCDEF.0123456789abcdef"));
        assert!(!is_valid("abcde.0123456789abcdef"));
    }
}
