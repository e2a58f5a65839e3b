// Copy buttons: copy the text of the element named by data-copy. What the button says
// afterwards comes from the page (data-copied, data-selected), in the page's language.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    button.textContent = button.dataset.copied || "Copied";
  } catch (error) {
    const range = document.createRange();
    range.selectNodeContents(source);
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    button.textContent = button.dataset.selected || "Selected: press Ctrl+C to copy";
  }
});
