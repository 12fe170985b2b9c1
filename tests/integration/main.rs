//! integration

mod sandbox;
