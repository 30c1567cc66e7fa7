//! The families corral knows, in one list. Everything sized per family (INFO counters, data
//! types, notification names, the fuzzers' family choice) is sized from `Family::ALL`, so a
//! new family is one line here (and its folder, and its line in `lib.rs`'s table).

use serde::{Deserialize, Serialize};

macro_rules! families {
    ($($(#[cfg($cfg:meta)])? $variant:ident => $name:literal,)*) => {
        /// A family of primitives. Its index (declaration order) selects its row of INFO
        /// counters and its data type, and is the first byte of its effect batches.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Family {
            $($(#[cfg($cfg)])? $variant,)*
        }

        impl Family {
            /// Every family, in index order.
            pub const ALL: &'static [Family] = &[$($(#[cfg($cfg)])? Family::$variant,)*];

            /// Lower case, as in command names (`resv.lock`), notifications (`resv.grant`) and
            /// INFO fields (`corral_resv_grants`).
            pub fn name(self) -> &'static str {
                match self {
                    $($(#[cfg($cfg)])? Family::$variant => $name,)*
                }
            }
        }
    };
}

families! {
    Resv => "resv",
    Sem => "sem",
    Slot => "slot",
    Alloc => "alloc",
    Job => "job",
    // A test-only family (`src/toy/`): proves a new family needs nothing but its line.
    #[cfg(test)]
    Toy => "toy",
}

impl Family {
    /// How many families there are.
    pub const COUNT: usize = Self::ALL.len();

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: u8) -> Option<Family> {
        Family::ALL.get(usize::from(i)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_positions_in_all() {
        for (i, f) in Family::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
            assert_eq!(Family::from_index(i as u8), Some(*f));
        }
        assert_eq!(Family::from_index(Family::COUNT as u8), None);
        let mut names: Vec<_> = Family::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Family::COUNT, "names are unique");
    }
}
