//! Warmstart: transfer learning on small datasets as a self-hosted HTTP service.
//!
//! Layers, top to bottom: `http` (axum handlers, never sees candle) → `jobs` (the queue and
//! its worker threads) → `train` (the recipe) → `backbones` (pre-trained networks) →
//! `store` (SQLite rows and the artefact folder). `datasets` parses uploads; `serve`
//! keeps trained models loaded for prediction; `export` writes and unpacks self-contained
//! model archives; `admin` runs the `keys` subcommand; `cli` is the command-line client, which talks to a running server
//! over HTTP only. `error_code` is the one table of error codes every layer's error
//! names.

pub mod admin;
pub mod app;
pub mod backbones;
pub mod cli;
pub mod config;
pub mod datasets;
pub mod error_code;
pub mod export;
pub mod http;
pub mod jobs;
pub mod serve;
pub mod store;
pub mod train;
