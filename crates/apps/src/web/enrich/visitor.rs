//! Who the visitor is, without keeping who they are: the device class of
//! a screen width, and the day's keyed hash of agent, address and site.

use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// A screen width to a device class, with Plausible's breakpoints.
pub fn device_of_width(w: u32) -> &'static str {
    match w {
        0..=575 => "Mobile",
        576..=991 => "Tablet",
        992..=1439 => "Laptop",
        _ => "Desktop",
    }
}

/// The visitor id: SipHash-2-4 keyed by the day's salt over the user agent,
/// the address and the site, as 16 hex digits. Without the salt (deleted
/// after a day) it cannot be traced back or linked across days or sites.
pub fn visitor_id(salt: &[u8; 16], user_agent: &str, ip: &str, site: &str) -> String {
    let k0 = u64::from_le_bytes(salt[..8].try_into().unwrap_or([0; 8]));
    let k1 = u64::from_le_bytes(salt[8..].try_into().unwrap_or([0; 8]));
    let mut h = SipHasher24::new_with_keys(k0, k1);
    for part in [user_agent, ip, site] {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    format!("{:016x}", h.finish())
}
