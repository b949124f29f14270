//! `client_network`: the network a client address belongs to, a column the
//! engine adds next to `ab_role`.
//!
//! "One key from many new IPs" (ATLAS AML.T0012, valid accounts) cannot be
//! judged on addresses: a phone changes address all day inside its carrier's
//! network. Networks are what a key's history knows, so the engine derives
//! an IPv4 address's /16 (`10.66.0.0/16`) and an IPv6 address's /48
//! (`2001:db8:1::/48`; IPv4-mapped addresses count as IPv4). Rules then
//! count `distinct(client_network)` per key against the key's own baseline.
//! Anything that is not an address gives null.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringDictionaryBuilder};
use arrow::datatypes::{DataType, Int32Type};
use arrow::record_batch::RecordBatch;
use inferwatch_core::column;

/// The name of the column.
pub const CLIENT_NETWORK: &str = "client_network";

/// Its type: an Int32 dictionary of strings, like the other key columns.
pub fn network_type() -> DataType {
    inferwatch_core::dictionary_utf8()
}

/// Writes the network of `address` into `out` (cleared first); false when
/// `address` is not an IP address.
pub fn network_of(address: &str, out: &mut String) -> bool {
    out.clear();
    let Ok(parsed) = address.trim().parse::<IpAddr>() else {
        return false;
    };
    let parsed = match parsed {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(parsed, IpAddr::V4),
        v4 => v4,
    };
    // Writing to a String cannot fail.
    let _ = match parsed {
        IpAddr::V4(v4) => {
            let [first, second, _, _] = v4.octets();
            write!(out, "{first}.{second}.0.0/16")
        }
        IpAddr::V6(v6) => {
            let [a, b, c, ..] = v6.segments();
            write!(out, "{a:x}:{b:x}:{c:x}::/48")
        }
    };
    true
}

/// The `client_network` column of `batch` (all null when it has no
/// `client_ip`).
pub fn network_column(batch: &RecordBatch) -> ArrayRef {
    let rows = batch.num_rows();
    let Some(addresses) = batch
        .column_by_name(column::CLIENT_IP)
        .and_then(|array| arrow::compute::cast(array, &DataType::Utf8).ok())
    else {
        return arrow::array::new_null_array(&network_type(), rows);
    };
    let addresses = addresses.as_string::<i32>();
    let mut builder = StringDictionaryBuilder::<Int32Type>::new();
    let mut network = String::new();
    for row in 0..rows {
        if addresses.is_valid(row) && network_of(addresses.value(row), &mut network) {
            builder.append_value(&network);
        } else {
            builder.append_null();
        }
    }
    Arc::new(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(address: &str) -> Option<String> {
        let mut out = String::new();
        network_of(address, &mut out).then_some(out)
    }

    #[test]
    fn addresses_map_to_their_networks() {
        assert_eq!(network("10.66.153.229").as_deref(), Some("10.66.0.0/16"));
        assert_eq!(network(" 100.64.7.1 ").as_deref(), Some("100.64.0.0/16"));
        assert_eq!(
            network("2001:db8:1:2::7").as_deref(),
            Some("2001:db8:1::/48")
        );
        assert_eq!(network("::ffff:192.0.2.1").as_deref(), Some("192.0.0.0/16"));
        assert_eq!(network("not an address"), None);
        assert_eq!(network("300.1.1.1"), None);
    }
}
