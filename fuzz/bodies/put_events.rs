//! The dev server's PutEvents decoding (`cairn_dev::aws::decode_put_events`): any request
//! body is refused or decoded entry by entry, never a panic; entries as an SDK encodes them
//! (Detail as a JSON string, Time as epoch seconds or RFC 3339) decode to what was encoded.

use crate::bodies::hostile;
use arbitrary::{Result, Unstructured};
use cairn_dev::aws::{MAX_ENTRIES, decode_put_events};
use cairn_dev::dev::MAX_ENTRY_BYTES;
use serde_json::{Map, Value, json};

const BUSES: &[&str] = &["default", "cairn"];

/// The target body.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let buses: Vec<String> = BUSES.iter().map(|b| (*b).to_string()).collect();
    if mode % 2 == 0 {
        if let Ok(request) = serde_json::from_slice::<Value>(rest) {
            check(&request, &buses);
        }
        return;
    }
    let _ = round_trip(&mut Unstructured::new(rest), &buses);
}

fn check(request: &Value, buses: &[String]) {
    if let Ok(entries) = decode_put_events(request, buses) {
        assert_eq!(Some(entries.len()), request["Entries"].as_array().map(Vec::len));
        assert!((1..=MAX_ENTRIES).contains(&entries.len()));
        for entry in entries.into_iter().flatten() {
            assert!(entry.detail.is_object() && !entry.source.is_empty() && !entry.detail_type.is_empty());
            assert!(buses.iter().any(|bus| bus == cairn_dev::dev::Dev::bus_name(&entry.bus)));
        }
    }
}

/// What one encoded entry should decode to.
struct Expected {
    source: String,
    detail_type: String,
    detail: Value,
    bus: Option<String>,
    time: Option<i64>,
}

fn round_trip(u: &mut Unstructured<'_>, buses: &[String]) -> Result<()> {
    let mut entries = Vec::new();
    let mut expected = Vec::new();
    let mut size = 0;
    for _ in 0..u.int_in_range(1..=MAX_ENTRIES as u8 + 1)? {
        let source = hostile::string(u)? + "s";
        let detail_type = hostile::string(u)? + "t";
        let detail = Value::Object(hostile::object(u, 3)?);
        let bus = match u.int_in_range(0..=2u8)? {
            0 => None,
            1 => Some("cairn".to_string()),
            _ => Some("arn:aws:events:us-east-1:000000000000:event-bus/cairn".to_string()),
        };
        // Up to year 9999, to the millisecond, as the SDKs send it.
        let time: Option<i64> =
            u.arbitrary::<bool>()?.then(|| u.int_in_range(-62_135_596_800_000..=253_402_300_799_999)).transpose()?;
        let mut entry = Map::new();
        entry.insert("Source".into(), json!(source));
        entry.insert("DetailType".into(), json!(detail_type));
        let detail_text = detail.to_string();
        size += source.len() + detail_type.len() + detail_text.len();
        entry.insert("Detail".into(), json!(detail_text));
        if let Some(bus) = &bus {
            entry.insert("EventBusName".into(), json!(bus));
        }
        if let Some(ms) = time {
            size += 14;
            let encoded = if u.arbitrary()? {
                json!(ms as f64 / 1000.0)
            } else {
                json!(chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()))
            };
            entry.insert("Time".into(), encoded);
        }
        entries.push(Value::Object(entry));
        expected.push(Expected { source, detail_type, detail, bus, time });
    }
    let request: Value = serde_json::from_str(&json!({"Entries": entries}).to_string()).unwrap_or_default();
    let decoded = decode_put_events(&request, buses);
    if expected.len() > MAX_ENTRIES || size > MAX_ENTRY_BYTES {
        assert_eq!(decoded.err().map(|(kind, _)| kind), Some("ValidationException"));
        return Ok(());
    }
    let decoded = decoded.unwrap_or_default();
    assert_eq!(decoded.len(), expected.len());
    for (entry, expected) in decoded.into_iter().zip(expected) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(refusal) => panic!("refused {refusal:?}"),
        };
        assert_eq!(entry.source, expected.source);
        assert_eq!(entry.detail_type, expected.detail_type);
        assert_eq!(entry.detail, expected.detail);
        assert_eq!(entry.bus, expected.bus.unwrap_or_else(|| "default".into()));
        assert_eq!(entry.time, expected.time, "Time decodes to the millisecond");
    }
    Ok(())
}
