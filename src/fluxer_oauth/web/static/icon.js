// The portal's icon form: the chosen file travels as a data URI, as the API takes it.
document.addEventListener("change", (event) => {
  if (event.target.id !== "icon-file") return;
  const file = event.target.files[0];
  const upload = document.getElementById("icon-upload");
  upload.disabled = true;
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    document.getElementById("icon-data").value = reader.result;
    upload.disabled = false;
  };
  reader.readAsDataURL(file);
});
