//! The conformance suite every backend must pass, written once.
//!
//! Each scenario is a plain `pub fn(&Fixture)` in a module grouped by theme:
//! - [`layers`]: create, base content, snapshots, views, kinds, parents, errors, second handle;
//! - [`changes`]: modified, deleted, moved, chowned, removed dirs, permissions, usage;
//! - [`deep`]: 128-layer stacks read through and compared with a flat reference;
//! - [`archives`]: diff and re-apply, whiteouts, hostile tars;
//! - [`rollback`]: a failed apply leaves the layer as it was.
//!
//! They cover moby's graphtest (create empty/base, snapshot, deep layer read, diff apply,
//! changes) and containerd's snapshotter test suite (basic, deleted files, move, dir removed,
//! chown, dir permissions, update five times, reuse key, remove with children, view
//! read-only, transitivity, 128 layers mount, commit of a view).
//!
//! A backend's test file runs all of them, one `#[test]` each:
//! ```ignore
//! cowbench_drivers::conformance_tests!("btrfs");
//! cowbench_drivers::conformance_tests!("devicemapper", "base_size" => "1G");
//! ```
//! Every test opens the driver on a fresh root through [`fixture`], which skips (printing why)
//! when the backend cannot run here, and fails when `COWBENCH_REQUIRE_DRIVERS` names it.
//! Per-backend differences are [`crate::Capabilities`] flags (e.g. the deep scenarios skip,
//! saying so, when `max_depth` is below 128), never per-backend branches.

pub mod archives;
pub mod changes;
pub mod deep;
pub mod fixture;
pub mod layers;
pub mod rollback;
pub mod tree;
pub mod util;

pub use fixture::{fixture, Fixture};
pub use tree::{assert_trees_eq, tree_digest, Tree};

/// The scenario list, once: calls back `$callback! { $args module: name, ...; ... }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_scenarios {
    ($callback:ident ! $args:tt) => {
        $crate::$callback! { $args
            layers: create_empty, base_modes_and_owners, snapshot_shows_parent, reused_key_fails,
                remove_parent_with_children_fails, remove_mounted_fails, view_is_readonly, transitivity,
                commit_of_view_or_committed_fails, stat_and_list, second_handle_sees_layers;
            changes: changes_of_20_modified_files, deleted_stay_deleted, file_moved_from_lower,
                dir_removed_from_lower, chown_lower_file, dir_permissions_kept_on_commit,
                file_updated_five_times, usage_grows_after_write, digest_is_stable;
            deep: file_readable_through_128_layers, mount_128_equals_flat_reference;
            archives: diff_reapplied_on_fresh_parent, apply_whiteouts_and_opaque, hostile_tar_apply;
            rollback: refused_apply_leaves_layer_as_it_was, truncated_apply_leaves_layer_as_it_was;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_gen {
    (([$driver:expr] $opts:tt) $($module:ident : $($name:ident),* ;)*) => {
        $(
            mod $module {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[test]
                    fn $name() {
                        let options: &[(&str, &str)] = &$opts;
                        if let Some(fx) = $crate::conformance::fixture($driver, options) {
                            $crate::conformance::$module::$name(&fx);
                        }
                    }
                )*
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_table {
    (() $($module:ident : $($name:ident),* ;)*) => {
        &[$($(
            (concat!(stringify!($module), "::", stringify!($name)), $crate::conformance::$module::$name as fn(&$crate::conformance::Fixture)),
        )*)*]
    };
}

/// One `#[test]` per conformance scenario for driver `$driver`, with optional backend options:
/// `conformance_tests!("zfs")`, `conformance_tests!("devicemapper", "base_size" => "1G")`.
/// Tests are named `<theme>::<scenario>`, e.g. `layers::view_is_readonly`.
#[macro_export]
macro_rules! conformance_tests {
    ($driver:expr $(, $k:expr => $v:expr)* $(,)?) => {
        $crate::__conformance_scenarios!(__conformance_gen!([$driver] [$(($k, $v)),*]));
    };
}

/// A scenario: its name (`theme::scenario`) and function.
pub type Scenario = (&'static str, fn(&Fixture));

/// Every scenario by name, for runners other than `cargo test`.
pub const SCENARIOS: &[Scenario] = __conformance_scenarios!(__conformance_table!());
