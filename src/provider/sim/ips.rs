//! Simulated machine addresses: deterministic (a hash of cluster and machine
//! name picks the first candidate), unique across the simulator, and never
//! handed out twice.
//!
//! A cluster's addresses start in its own `100.A.0.0/16` block (65,000
//! usable addresses, from `cidr_base`); when that block is full they spill
//! into the next of the 64 blocks of `100.64.0.0/10`. A count per block
//! lets a full block be skipped without probing it, so the cost per
//! machine stays flat however many machines a cluster has. All 64 blocks
//! full (4,160,000 machines) is an error, never a duplicate address.

use std::collections::{HashMap, HashSet};

/// Usable addresses per block: offsets 10..65,010 of the block.
const PER_BLOCK: u32 = 65_000;
/// `100.64.0.0/10` holds 64 `/16` blocks: second octets 64..=127.
const BLOCKS: u32 = 64;

#[derive(Debug, Default)]
pub(super) struct IpPool {
    used: HashSet<u32>,
    per_block: HashMap<u8, u32>,
}

fn encode(a: u8, x: u8, y: u8) -> u32 {
    (100 << 24) | (u32::from(a) << 16) | (u32::from(x) << 8) | u32::from(y)
}

fn decode(ip: &str) -> Option<u32> {
    let parts: Vec<u8> = ip
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts[..] {
        [100, a, x, y] => Some(encode(a, x, y)),
        _ => None,
    }
}

fn text(ip: u32) -> String {
    let [o1, o2, o3, o4] = ip.to_be_bytes();
    format!("{o1}.{o2}.{o3}.{o4}")
}

impl IpPool {
    /// Record an address already handed out (read back from a record).
    pub(super) fn insert_existing(&mut self, ip: &str) {
        if let Some(n) = decode(ip) {
            if self.used.insert(n) {
                *self.per_block.entry(n.to_be_bytes()[1]).or_default() += 1;
            }
        }
    }

    /// A free address for this machine. `(a, b)` is the cluster's base
    /// (`cidr_base`), `start` the machine's hash.
    pub(super) fn allocate(&mut self, (a, b): (u8, u8), start: u64) -> Option<String> {
        let start = (start % u64::from(PER_BLOCK)) as u32;
        let first = u32::from(a).clamp(64, 127) - 64;
        for k in 0..BLOCKS {
            let block = (64 + (first + k) % BLOCKS) as u8;
            if self.per_block.get(&block).copied().unwrap_or(0) >= PER_BLOCK {
                continue;
            }
            for i in 0..PER_BLOCK {
                let n = (start + i) % PER_BLOCK + 10;
                let ip = encode(block, b.wrapping_add((n / 256) as u8), (n % 256) as u8);
                if self.used.insert(ip) {
                    *self.per_block.entry(block).or_default() += 1;
                    return Some(text(ip));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_unique_past_one_block() {
        let mut pool = IpPool::default();
        let mut seen = HashSet::new();
        // One more than a block holds: the rest spill into the next block.
        for i in 0..(PER_BLOCK as u64 + 1_000) {
            let ip = pool
                .allocate((70, 5), i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .expect("free addresses left");
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        }
        assert!(seen.iter().any(|ip| ip.starts_with("100.71.")));
        assert!(seen
            .iter()
            .all(|ip| ip.starts_with("100.70.") || ip.starts_with("100.71.")));
    }

    #[test]
    fn the_same_machine_gets_the_same_address_and_existing_ones_are_skipped() {
        let mut one = IpPool::default();
        let mut two = IpPool::default();
        let ip = one.allocate((100, 7), 42).unwrap();
        assert_eq!(two.allocate((100, 7), 42).unwrap(), ip);
        let mut three = IpPool::default();
        three.insert_existing(&ip);
        let other = three.allocate((100, 7), 42).unwrap();
        assert_ne!(other, ip);
    }

    #[test]
    fn a_full_simulator_is_an_error_not_a_duplicate() {
        let mut pool = IpPool::default();
        for block in 64..=127u8 {
            pool.per_block.insert(block, PER_BLOCK);
        }
        assert_eq!(pool.allocate((64, 0), 1), None);
    }
}
