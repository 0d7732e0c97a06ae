//! Warmstart: transfer learning on small datasets as a self-hosted HTTP service.
//!
//! Layers, top to bottom: `http` (axum handlers, never sees candle) → `jobs` (the queue and
//! its worker threads) → `train` (the recipe) → `backbones` (pre-trained networks) →
//! `store` (SQLite rows and the artefact folder).

pub mod backbones;
