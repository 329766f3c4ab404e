"""Building blocks with no ms-swift import: testable alone, reusable from data tools."""
