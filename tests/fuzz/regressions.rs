//! Inputs the fuzz targets found breaking a property, each replayed with its exact expectation.

use cairn_dev::aws::decode_put_events;
use serde_json::json;

/// The SDKs send `Time` as epoch seconds; `1795392000.123 * 1000` is often a hair under the
/// millisecond, and truncating it dated about one event in 170 a millisecond early.
#[test]
fn put_events_time_in_epoch_seconds_keeps_its_millisecond() {
    let buses = vec!["default".to_string()];
    for ms in [2_170_587_569_969_i64, 1_795_392_000_123, -1, 0] {
        let request =
            json!({"Entries": [{"Source": "s", "DetailType": "t", "Detail": "{}", "Time": ms as f64 / 1000.0}]});
        let entries = decode_put_events(&request, &buses).unwrap();
        assert_eq!(entries[0].as_ref().unwrap().time, Some(ms));
    }
    // A time the calendar cannot hold is refused, as a bad RFC 3339 string is.
    let request = json!({"Entries": [{"Source": "s", "DetailType": "t", "Detail": "{}", "Time": 1e300}]});
    let entries = decode_put_events(&request, &buses).unwrap();
    assert_eq!(
        entries[0].as_ref().unwrap_err(),
        &("InvalidArgument", "Parameter Time is not valid: 1e+300".to_string())
    );
}
