//! The S3 server the shared store's tests run against (harness/s3.rs) is a real one: it checks
//! signatures, refuses a conditional create of an existing object atomically (412), returns bodies
//! byte for byte, lists what it holds, refuses connections while its gateway is stopped and still
//! holds the objects once the gateway is back.

use crate::harness::s3::signed::{object_path, Credentials, Signer};
use crate::harness::s3::{unique_bucket_name, S3Server};

#[test]
fn radosgw_serves_conditional_creates_and_survives_a_gateway_restart() {
    let server = S3Server::shared();
    let bucket = unique_bucket_name("s3-server");
    server.create_bucket(&bucket);
    // A gateway of this test's own: the shared one serves the other tests and is never stopped.
    let gateway = server.start_gateway();
    let key = "dir/pkg-1.0-py3-none-any.whl";
    let first: Vec<u8> = (0..300_000).map(|_| rand::random::<u8>()).collect();
    let second: Vec<u8> = (0..1_000).map(|_| rand::random::<u8>()).collect();

    let created = gateway.put_object(&bucket, key, &first, &[("if-none-match", "*")]);
    assert_eq!(created.status, 200, "first create: {}", created.text());
    let refused = gateway.put_object(&bucket, key, &second, &[("if-none-match", "*")]);
    assert_eq!(refused.status, 412, "second create: {}", refused.text());

    // Both gateways read the first body, which the refused create left untouched.
    for (who, read) in [
        ("its gateway", gateway.get_object(&bucket, key)),
        ("the shared gateway", server.get_object(&bucket, key)),
    ] {
        assert_eq!(read.status, 200, "{who}: {}", read.text());
        assert!(read.body == first, "{who} returned other bytes");
    }
    let listed = vec![(key.to_owned(), first.len() as u64)];
    assert_eq!(server.list(&bucket, "dir/"), listed);
    assert_eq!(server.list(&bucket, "other/"), []);

    // Signatures are checked: the wrong secret is refused, the right one in another signer works.
    let signer = |secret: &str| Signer {
        endpoint: server.endpoint(),
        region: server.region().to_owned(),
        credentials: Credentials {
            access_key_id: server.access_key_id().to_owned(),
            secret_access_key: secret.to_owned(),
        },
    };
    let path = object_path(&bucket, key);
    let forged = signer("wgs3-not-the-secret").expect_answer("GET", &path, &[], None);
    assert_eq!(forged.status, 403, "wrong secret: {}", forged.text());
    let genuine = signer(server.secret_access_key()).expect_answer("GET", &path, &[], None);
    assert_eq!(genuine.status, 200, "right secret: {}", genuine.text());

    gateway.stop();
    let failure = gateway
        .signer()
        .request("GET", &path, &[], None)
        .expect_err("a stopped gateway answered");
    assert!(
        failure.is_connection_refused(),
        "a stopped gateway should refuse connections: {failure:?}"
    );
    assert_eq!(server.get_object(&bucket, key).status, 200);

    gateway.start();
    let read = gateway.get_object(&bucket, key);
    assert_eq!(read.status, 200, "after the restart: {}", read.text());
    assert!(
        read.body == first,
        "the restarted gateway returned other bytes"
    );
    assert_eq!(gateway.list(&bucket, "dir/"), listed);
}
