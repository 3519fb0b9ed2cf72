//! Named parameter blocks laid out in one flat `f64` vector: what the optimiser updates and what a
//! checkpoint stores (one HDF5 dataset per block, named as the reference's `state_dict`).

/// One named tensor inside the flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamBlock {
    /// Reference name, e.g. `rnn.transition.m`.
    pub name: String,
    /// Row-major shape, e.g. `[N, R]`; `[]` is a scalar stored as one element.
    pub shape: Vec<usize>,
    /// Start of the block in the flat vector.
    pub offset: usize,
    /// Frozen blocks keep their value; their gradient entries are ignored by the optimiser.
    pub trainable: bool,
}

impl ParamBlock {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the block holds no element (e.g. `Wu` with `dim_u = 0`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index range of the block in the flat vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The ordered list of blocks; the flat vector is their concatenation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamLayout {
    blocks: Vec<ParamBlock>,
    len: usize,
}

impl ParamLayout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a block and returns its offset. Names must be unique.
    ///
    /// # Panics
    /// On a duplicate name: layouts are built by code, never from user input.
    pub fn push(&mut self, name: &str, shape: &[usize], trainable: bool) -> usize {
        assert!(
            self.get(name).is_none(),
            "duplicate parameter block name {name}"
        );
        let offset = self.len;
        let block = ParamBlock {
            name: name.to_string(),
            shape: shape.to_vec(),
            offset,
            trainable,
        };
        self.len += block.len();
        self.blocks.push(block);
        offset
    }

    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn blocks(&self) -> &[ParamBlock] {
        &self.blocks
    }

    pub fn get(&self, name: &str) -> Option<&ParamBlock> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// Number of trainable scalars (the paper's |θ| counts these).
    pub fn n_trainable(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| b.trainable)
            .map(|b| b.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_concatenated_in_order() {
        let mut layout = ParamLayout::new();
        assert_eq!(layout.push("m", &[4, 2], true), 0);
        assert_eq!(layout.push("decay", &[], true), 8);
        assert_eq!(layout.push("B", &[3], false), 9);
        assert_eq!(layout.len(), 12);
        assert_eq!(layout.n_trainable(), 9);
        assert_eq!(layout.get("B").map(|b| b.range()), Some(9..12));
    }
}
