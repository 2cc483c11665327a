package main

// The collector release every module in go.mod is pinned to (core and contrib alike).
const version = "0.165.0"
