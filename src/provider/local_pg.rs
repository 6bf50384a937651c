//! PostgreSQL on this machine: branch = CREATE DATABASE ... TEMPLATE parent. (Issue 3.)
