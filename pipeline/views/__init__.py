"""Read-side views of stored data for the CLI: trace trees and trace lists."""
