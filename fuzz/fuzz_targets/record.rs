//! Fuzzes the record decoders (the store's record files, the shared cache's signed records):
//! they must never panic, and what they accept must decode again to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(canonical) = kiln::fuzzing::decode_record(data) {
        assert_eq!(
            kiln::fuzzing::decode_record(&canonical).as_deref(),
            Some(canonical.as_slice()),
            "a record does not survive its own encoding"
        );
    }
    if let Some(canonical) = kiln::fuzzing::decode_signed_record(data) {
        assert_eq!(
            kiln::fuzzing::decode_signed_record(&canonical).as_deref(),
            Some(canonical.as_slice()),
            "a signed record does not survive its own encoding"
        );
    }
});
