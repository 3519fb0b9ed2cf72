//! Stage kinds: each implements the pipeline `Stage` trait.
