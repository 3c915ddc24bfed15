//! The API test suite on the in-process backend.

mod common;

use uiommu::{BackendKind, Iommufd};

#[test]
fn api_suite_in_process() {
    common::run_all(&|| {
        let fd = Iommufd::in_process().unwrap();
        assert_eq!(fd.backend(), BackendKind::InProcess);
        fd
    });
}
