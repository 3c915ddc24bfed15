//! Typed flags of the public API (each maps to the uAPI bits of the same meaning).

use uiommu_uapi::iommufd as u;
use uiommu_uapi::test as t;

bitflags::bitflags! {
    /// What devices may do through a mapping (`IOMMU_IOAS_MAP_READABLE` / `_WRITEABLE`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MapFlags: u32 {
        /// Devices may read the memory (DMA to the device).
        const READ = u::IOMMU_IOAS_MAP_READABLE;
        /// Devices may write the memory (DMA from the device).
        const WRITE = u::IOMMU_IOAS_MAP_WRITEABLE;
    }
}

bitflags::bitflags! {
    /// Properties requested for a hardware page table (`IOMMU_HWPT_ALLOC_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct HwptFlags: u32 {
        /// The HWPT may be the stage-2 parent of nested HWPTs.
        const NEST_PARENT = u::IOMMU_HWPT_ALLOC_NEST_PARENT;
        /// The domain tracks which pages devices write (needs a dirty-capable device).
        const DIRTY_TRACKING = u::IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
        /// The domain may be attached to PASIDs.
        const PASID = u::IOMMU_HWPT_ALLOC_PASID;
    }
}

bitflags::bitflags! {
    /// Properties of an emulated (mock) device (`MOCK_FLAGS_DEVICE_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct DeviceFlags: u32 {
        /// The device's IOMMU cannot track dirty pages.
        const NO_DIRTY = t::MOCK_FLAGS_DEVICE_NO_DIRTY;
        /// The device supports PASIDs.
        const PASID = t::MOCK_FLAGS_DEVICE_PASID;
    }
}

bitflags::bitflags! {
    /// IOMMU capabilities of a device (`IOMMU_HW_CAP_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct HwCaps: u64 {
        /// Dirty tracking is supported.
        const DIRTY_TRACKING = u::IOMMU_HW_CAP_DIRTY_TRACKING;
        /// PCI PASID execute permission is supported.
        const PCI_PASID_EXEC = u::IOMMU_HW_CAP_PCI_PASID_EXEC;
        /// PCI PASID privileged mode is supported.
        const PCI_PASID_PRIV = u::IOMMU_HW_CAP_PCI_PASID_PRIV;
        /// ATS cannot be used on this device.
        const PCI_ATS_NOT_SUPPORTED = u::IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED;
    }
}

bitflags::bitflags! {
    /// Access a page request asked for (`IOMMU_PGFAULT_PERM_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct FaultPerm: u32 {
        /// Read access.
        const READ = u::IOMMU_PGFAULT_PERM_READ;
        /// Write access.
        const WRITE = u::IOMMU_PGFAULT_PERM_WRITE;
        /// Execute access.
        const EXEC = u::IOMMU_PGFAULT_PERM_EXEC;
        /// Privileged access.
        const PRIV = u::IOMMU_PGFAULT_PERM_PRIV;
    }
}
