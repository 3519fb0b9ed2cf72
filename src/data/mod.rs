//! Data in: NPY, EDF, NWB/HDF5 readers and writers, binning, dataset manifests, simulators.
pub mod bench;
pub mod binning;
pub mod crcns;
pub mod edf;
pub mod fetch;
pub mod npy;
pub mod nwb;
pub mod nwb_write;
pub mod sequences_io;
pub mod simulate;
pub mod surrogate;
