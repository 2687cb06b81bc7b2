//! A large file uploaded to a bucket output in parts (a multipart upload), against the real S3
//! server of `util::s3`: the object equals the file byte for byte. Its own test binary, as it
//! sets the AWS environment of this process (slabflow's library reads it).

mod util;

use util::s3::SeaweedFs;

#[test]
fn a_large_file_goes_up_in_parts_and_arrives_whole() {
    let s3 = SeaweedFs::start();
    s3.create_bucket("results");
    // SAFETY: the only test of this binary, before any other thread reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", util::s3::KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", util::s3::SECRET);
        std::env::set_var("AWS_ENDPOINT_URL", &s3.endpoint);
        std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
    }
    let local = slabflow::files::mirror::attach(std::path::Path::new("s3://results/up")).unwrap();
    let (m, _) = slabflow::files::mirror::of(&local).unwrap();
    // 21 MiB of incompressible bytes: three parts of 8 MiB, the last one short.
    let len = 21 << 20;
    let mut bytes = Vec::with_capacity(len);
    let mut x = 0x9e3779b97f4a7c15u64;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    let file = local.join("review/big.nii.gz");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    m.upload(&file, "review/big.nii.gz").unwrap();
    // The store says how it was made: a multipart object's ETag ends with its part count.
    let e_tag = s3.e_tag("results", "up/review/big.nii.gz");
    assert!(e_tag.trim_matches('"').ends_with("-3"), "ETag {e_tag}: not an upload of 3 parts");
    let got = s3.download("results", "up/review");
    assert_eq!(got.len(), 1);
    assert!(got.values().next().unwrap() == &bytes, "the object differs from the file");
}
