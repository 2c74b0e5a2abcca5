//! Building blocks shared by the model families (`plugins/backbones`, `plugins/rcnn`, and
//! every family added later). A family library links this crate; families never link each
//! other (each is a plugin library with its own entry symbol), so what two families share
//! lives here or in `kernels`.
//!
//! - [`image`]: the pre-processed image (`ImageSizes`: padded, resized and original sizes) and
//!   the `image` input port of a head.
//! - [`features`]: feature levels by name, the `features`/`in_features` declarations, and
//!   the RoI pooler over the levels.
//! - [`weights`]: reading a checkpoint, finding a sub-module's prefix, and the
//!   `weights`/`prefix` parameters.
//! - [`layers`]: `[N, C, H, W]` views, and convolutions (batch norm folded in) and linear
//!   layers bound by parameter name.
//! - [`params`]: count and float parameters (ranges are declared with `ParamSpec::range`).
//! - [`error`]: [`ModelError`], whose messages name the parameter, input or file at fault.

pub mod coco;
pub mod error;
pub mod family;
pub mod features;
pub mod image;
pub mod layers;
pub mod params;
pub mod weights;

pub use coco::COCO_CATEGORY_IDS;
pub use error::{LayerContext, ModelError};
pub use features::{
    feature_levels, features_input, in_features_param, levels_params, named_levels, RoiPooler,
};
pub use image::{
    image_input, model_image_value, padded_model_image_value, shortest_edge_size, BgrPixels,
    ImageSizes,
};
pub use layers::{
    conv_bias, conv_bn, conv_bn_relu, from_nchw, linear, nchw, transpose_layout, ConvGroupNorm,
    GN_GROUPS,
};
pub use params::{count_list_param, count_param, f32_value, float_param};
pub use weights::{load_weights, module_name, resolve_prefix, weights_param, weights_params};
