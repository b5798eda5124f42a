//! Fuzzes the lockfile parser: it must never panic, and whatever it accepts must survive a
//! canonical write and parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(lock) = kiln::lockfile::Lockfile::parse(text, "fuzz") {
        let again = kiln::lockfile::Lockfile::parse(&lock.to_canonical(), "fuzz")
            .expect("a canonical lockfile parses");
        assert_eq!(again, lock);
    }
});
