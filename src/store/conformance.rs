//! One suite every [`Store`] backend passes.

use std::collections::BTreeMap;

use crate::hash::{Derivation, Digest, InputRef};

use super::{LocalStore, MemoryStore, OutputRef, Record, Store, StoreError};

fn derivation(tag: &str) -> Derivation {
    Derivation {
        kind: "exec".into(),
        schema: 1,
        image: Digest::of(b"image"),
        argv: vec!["true".into(), tag.into()],
        env: BTreeMap::new(),
        inputs: BTreeMap::from([("v".into(), InputRef::Value { value: tag.into() })]),
        outputs: vec!["out".into()],
        network: None,
    }
}

async fn suite<S: Store>(store: S, corrupt: impl Fn(&Digest, &[u8])) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"hello").unwrap();

    // Put is idempotent and content-addressed.
    let (digest, size) = store.put_file(&file).await.unwrap();
    assert_eq!((digest, size), (Digest::of(b"hello"), 5));
    assert_eq!(store.put_file(&file).await.unwrap().0, digest);
    assert!(store.contains(&digest).await.unwrap());
    assert!(!store.contains(&Digest::of(b"absent")).await.unwrap());

    // Export is verified; missing is Ok(false).
    let out = dir.path().join("out");
    assert!(store.export(&digest, &out).await.unwrap());
    assert_eq!(std::fs::read(&out).unwrap(), b"hello");
    assert!(
        !store
            .export(&Digest::of(b"absent"), &dir.path().join("x"))
            .await
            .unwrap()
    );

    // Trees round-trip.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/a"), b"a").unwrap();
    let (tree_digest, _) = store.put_tree(&tree).await.unwrap();
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    assert!(store.unpack(&tree_digest, &unpacked).await.unwrap());
    assert_eq!(std::fs::read(unpacked.join("sub/a")).unwrap(), b"a");

    // A corrupt tree that is still a valid archive (same shape, other bytes) is caught before
    // anything is written: nothing of it reaches the destination.
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("sub")).unwrap();
    std::fs::write(other.join("sub/a"), b"b").unwrap();
    let mut forged = Vec::new();
    super::pack_tree(&other, &mut forged).unwrap();
    corrupt(&tree_digest, &forged);
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let bad = store.unpack(&tree_digest, &target).await;
    assert!(matches!(bad, Err(StoreError::Corrupt { .. })), "{bad:?}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "the corrupt tree was unpacked"
    );

    // A stored tree whose entry claims more content than the whole archive holds (a PAX
    // `size` record of 1 GiB in a 3 KiB blob) is refused at the limit the blob's own size
    // sets, before anything of it is written.
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("size", &b"1073741824"[..])])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("big").unwrap();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b""[..]).unwrap();
    let claim = builder.into_inner().unwrap();
    let claim_file = dir.path().join("claim.tar");
    std::fs::write(&claim_file, &claim).unwrap();
    let (claim_digest, claim_len) = store.put_file(&claim_file).await.unwrap();
    let target = dir.path().join("claim");
    std::fs::create_dir(&target).unwrap();
    let bad = store.unpack(&claim_digest, &target).await;
    assert!(
        matches!(&bad, Err(StoreError::BadTree { reason, .. })
            if reason.contains(&format!("more than {claim_len} bytes"))),
        "{bad:?}"
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);

    // A record needs its outputs stored; it round-trips and is found by name.
    let missing = Record::new(
        "build",
        derivation("one"),
        BTreeMap::from([(
            "out".into(),
            OutputRef {
                digest: Digest::of(b"nope"),
                size: 4,
                tree: false,
            },
        )]),
    );
    assert!(matches!(
        store.put_record(&missing).await,
        Err(StoreError::MissingOutput { .. })
    ));
    assert_eq!(store.record(&missing.key).await.unwrap(), None);
    let record = Record::new(
        "build",
        derivation("one"),
        BTreeMap::from([(
            "out".into(),
            OutputRef {
                digest,
                size,
                tree: false,
            },
        )]),
    );
    store.put_record(&record).await.unwrap();
    assert_eq!(
        store.record(&record.key).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(store.latest("build").await.unwrap(), Some(record.clone()));
    let newer = Record::new("build", derivation("two"), record.outputs.clone());
    store.put_record(&newer).await.unwrap();
    assert_eq!(store.latest("build").await.unwrap(), Some(newer));

    // Locks can be taken and released.
    drop(store.lock_step(&record.key, &[digest]).await.unwrap());
    drop(store.lock_step(&record.key, &[]).await.unwrap());

    // A corrupt blob never leaves the store; it reads as missing afterwards, and a fresh put
    // repairs it.
    corrupt(&digest, b"jello");
    let bad = store.export(&digest, &dir.path().join("bad")).await;
    assert!(matches!(bad, Err(StoreError::Corrupt { .. })), "{bad:?}");
    assert!(!dir.path().join("bad").exists());
    assert!(!store.contains(&digest).await.unwrap());
    store.put_file(&file).await.unwrap();
    assert!(
        store
            .export(&digest, &dir.path().join("good"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn memory_store_conforms() {
    let store = MemoryStore::new();
    let handle = store.clone();
    suite(store, move |d, bytes| handle.corrupt(d, bytes.to_vec())).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let handle = store.clone();
    suite(store, move |d, bytes| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = handle.blob_path(d);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&path, bytes).unwrap();
    })
    .await;
}
