"""Reading images: the lowest layer every other package reads through."""
